"""Convert a dataset's official release into fewray's Parquet catalog.

Usage::

    python pipelines/prepare_data.py omniglot --source ../shared/data/omniglot --out data/omniglot
    python pipelines/prepare_data.py omniglot --download --source ~/datasets/omniglot --out data/omniglot
    python pipelines/prepare_data.py caltech101 --source ../shared/data/caltech101 --out data/caltech101
    python pipelines/prepare_data.py mini_imagenet --source ~/datasets/mini-imagenet --out data/mini_imagenet
    python pipelines/prepare_data.py tiered_imagenet --source ~/datasets/tiered-imagenet --out data/tiered_imagenet
    python pipelines/prepare_data.py cub --source ~/datasets/CUB --out data/cub
    python pipelines/prepare_data.py cifar_fs --source ~/datasets/cifar --out data/cifar_fs
    python pipelines/prepare_data.py folder --source photos/ --out data/photos --counts 6 2 2 --seed 0
    python pipelines/prepare_data.py folder --source photos/ --out data/photos --split-file split.yaml
    python pipelines/prepare_data.py multilabel --source ../shared/data/coco128 --out data/coco128_ml
    python pipelines/prepare_data.py multilabel --source ../shared/data --out data/coco_ml \
        --split-file configs/multi_label/coco_split.yaml
    python pipelines/prepare_data.py detection --source ../shared/data --out data/coco_fsdet \
        --split-file configs/detection/coco_split.yaml
    python pipelines/prepare_data.py detection --source ../shared/data/bccd --out data/bccd_det

``multilabel`` makes a multi-label catalog (a label set per image) from COCO JSON or Pascal VOC XML detection
annotations (fewray/data/sources/multilabel.py: the release layouts it detects); ``--split-file`` then
names the annotation files of each split (paths relative to --source), several per split and parts of a file
allowed (configs/multi_label/coco_split.yaml: the COCO split of benchmarks/multi_label_coco.py).

``detection`` makes a detection catalog (fewray/data/detection/catalog.py: the original image files' bytes and
their boxes, labels, crowd/difficult flags; fewray/data/detection/prepare.py: the release layouts and split files) from COCO JSON, Roboflow folders or VOC image sets; without
--split-file, the release's own splits. --split-file (the multilabel syntax, plus optional ``class_splits``)
names each split's files (configs/detection/coco_split.yaml: TFA's few-shot COCO protocol on our COCO images);
--class-splits coco|voc1|voc2|voc3|YAML sets the base/novel class split stored in catalog.json. Images are stored
as they are: --image-size, --resize and --format do not apply.

The release layouts and class splits are described in README.md ("Datasets") and in
fewray/data/sources/.

--out must be a new path, an empty directory or a catalog fewray wrote (catalog.json with a "dataset"
entry, *.parquet files and the .decoded/ cache, nothing else), which is then replaced atomically; it must
not be, contain or lie inside --source. This is checked before any image is read.
"""

from __future__ import annotations

import argparse
import json
import sys

import _bootstrap  # noqa: F401

from fewray.platform.errors import DataError, run_cli

DATASETS = ["omniglot", "mini_imagenet", "tiered_imagenet", "cub", "cifar_fs", "folder", "caltech101", "multilabel",
            "detection"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", choices=DATASETS, help="which release to convert")
    p.add_argument("--source", required=True, help="directory of the official release files")
    p.add_argument("--out", required=True, help="catalog directory to write")
    p.add_argument("--download", action="store_true", help="download the official release into --source first (omniglot)")
    p.add_argument("--image-size", type=int, default=None,
                   help="output image side in pixels (default 28 for omniglot, 32 for cifar_fs, 224 for multilabel, "
                        "84 otherwise)")
    g = p.add_argument_group("natural-image datasets (all but omniglot)")
    g.add_argument("--resize", choices=["stretch", "center_crop"], default="stretch",
                   help="stretch: resize the whole image to a square (default); center_crop: shorter side, then crop")
    g.add_argument("--format", choices=["png", "jpeg"], default="png", help="stored encoding (default png, lossless)")
    g = p.add_argument_group("folder")
    g.add_argument("--split-file", default=None,
                   help="class split: YAML/JSON {train: [...], val: [...], test: [...]}, '<split> <class>' lines, "
                        "or a directory of train.txt/val.txt/test.txt (cifar_fs: its split directory; multilabel: "
                        "YAML {split: [annotation files or {file: F, part: k/n}]}, configs/multi_label/coco_split.yaml)")
    g.add_argument("--counts", type=int, nargs=3, metavar=("TRAIN", "VAL", "TEST"), default=None,
                   help="random class split with these class counts")
    g.add_argument("--ratios", type=float, nargs=3, metavar=("TRAIN", "VAL", "TEST"), default=None,
                   help="random class split with these proportions (default 0.64 0.16 0.20)")
    g.add_argument("--seed", type=int, default=0, help="seed of the random class split (default 0)")
    g.add_argument("--exclude", action="append", default=[], metavar="CLASS", help="class folder to leave out (repeatable)")
    g = p.add_argument_group("detection")
    g.add_argument("--class-splits", default=None, metavar="NAME_OR_YAML",
                   help="base/novel class split stored in the catalog: coco (TFA's 60/20), voc1, voc2, voc3, or a "
                        "YAML {SPLIT_NAME: [classes]} (default: the split file's class_splits, else ALL_CLASSES only)")
    g.add_argument("--min-bbox-area", type=float, default=None, metavar="PIXELS2",
                   help="leave out COCO boxes smaller than this (w * h, pixels^2; mmfewshot's min_bbox_area); 1 drops "
                        "zero-size boxes, which are otherwise refused (default: keep every box)")
    args = p.parse_args(argv)
    from pathlib import Path

    from tqdm import tqdm

    from fewray.data.catalog import check_output_dir

    check_output_dir(args.out, (args.source,))  # fail fast: never replace the release or foreign files
    if args.class_splits is not None and args.dataset != "detection":
        raise DataError(f"--class-splits applies to detection only, not {args.dataset}")
    if args.dataset == "detection":
        from fewray.data.sources import DETECTION_SOURCES

        given = [flag for flag, value, default in (("--image-size", args.image_size, None), ("--resize", args.resize,
                 "stretch"), ("--format", args.format, "png"), ("--counts", args.counts, None),
                 ("--ratios", args.ratios, None), ("--exclude", args.exclude, [])) if value != default]
        if given:
            raise DataError(f"{given[0]} does not apply to detection: a detection catalog stores the original "
                            f"image files and their boxes")
        with tqdm(unit="img", desc="detection", disable=not sys.stderr.isatty()) as bar:
            info = DETECTION_SOURCES["detection"](args.source, args.out, split_file=args.split_file,
                                                  class_splits=args.class_splits, progress=bar.update,
                                                  min_bbox_area=args.min_bbox_area)
    elif args.dataset == "omniglot":
        from fewray.data import omniglot

        if args.download:
            try:
                omniglot.download(Path(args.source))
            except OSError as exc:
                raise DataError(f"download of Omniglot into {args.source} failed: {exc}") from None
        with tqdm(total=1623, unit="char", desc="omniglot", disable=not sys.stderr.isatty()) as bar:
            size = args.image_size if args.image_size is not None else 28
            info = omniglot.prepare_omniglot(args.source, args.out, size, progress=bar.update)
    else:
        from fewray.data.sources import DEFAULT_IMAGE_SIZE, MULTI_LABEL_SOURCES, SOURCES

        if args.download:
            raise DataError(f"--download is only available for omniglot; "
                            f"put the {args.dataset} release into --source by hand")
        kwargs = {"resize_mode": args.resize, "image_format": args.format}
        if args.dataset == "folder":
            kwargs.update(split_file=args.split_file, counts=args.counts, ratios=args.ratios, seed=args.seed,
                          exclude=args.exclude)
        elif args.dataset == "cifar_fs" and args.split_file:
            kwargs["split_dir"] = args.split_file
        elif args.dataset == "multilabel" and args.split_file:
            from fewray.data.sources.multilabel import read_annotation_split_file

            kwargs["splits"], kwargs["dataset"] = read_annotation_split_file(args.split_file)
        prepare = {**SOURCES, **MULTI_LABEL_SOURCES}[args.dataset]
        with tqdm(unit="img", desc=args.dataset, disable=not sys.stderr.isatty()) as bar:
            size = args.image_size if args.image_size is not None else DEFAULT_IMAGE_SIZE[args.dataset]
            info = prepare(args.source, args.out, size, progress=bar.update, **kwargs)
    print(json.dumps(info["splits"]))
    print(f"catalog written to {args.out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
