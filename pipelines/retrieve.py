"""Image-to-image retrieval: rank a gallery for each query image (mmpretrain's ImageToImageRetriever), with Ray.

Usage::

    # the documented protocol: Caltech-101's test classes as gallery and queries, every test image a query
    # against all the other test images (leave-one-out); Recall@1/5/10 and mAP@R
    python pipelines/retrieve.py --config configs/retrieval/efficientnet_lite0_caltech101.yaml
    python pipelines/retrieve.py --config configs/retrieval/conv4_caltech101.yaml --checkpoint runs/x/train_result.json

    # a few query images against a catalog split, or against a folder of images (class sub-folders = labels)
    python pipelines/retrieve.py --checkpoint runs/x/train_result.json --gallery-root data/caltech101 \
        --gallery-split test --query photo1.jpg photo2.jpg --topk 5 --output result.json
    python pipelines/retrieve.py --config configs/retrieval/efficientnet_lite0_caltech101.yaml \
        --gallery-dir photos/ --query photo1.jpg

The encoder is the backbone of ``--checkpoint`` (a fewray checkpoint, its directory or a train_result.json; without
``--config`` its stored config gives the catalog, image size and channels) or the ``model.image_encoder`` of
``--config`` (a retrieval config, configs/retrieval/: a pretrained backbone, or a random one seeded by ``seed``).
Gallery features are extracted by Ray tasks over shards of the gallery (identical for any number of workers),
queries are ranked in shards. Prints each query's top-k (file names and classes; ``--show N`` queries), then
``Recall@K`` and ``mAP@R`` when queries and gallery are labelled; writes the result JSON to ``--output`` and to an
MLflow run (metrics ``Recall_at_K``, ``mAP_at_R``; ``result.json``), whose UI line goes to stderr.
``--dump-prototype FILE`` saves the gallery features, ``--prototype FILE`` reuses them (no extraction).
Everything is checked before Ray starts (``--dry-run`` stops there); a bad input is one ``error:`` line, exit 2.
"""

from __future__ import annotations

import argparse

import _bootstrap  # noqa: F401

from fewray.platform.cli import check_output_file, finish, positive_int
from fewray.platform.errors import ConfigError, run_cli


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="retrieval YAML (configs/retrieval/); optional with --checkpoint")
    p.add_argument("--checkpoint", help="fewray checkpoint.pt, its directory or a train_result.json: its backbone "
                                        "is the encoder")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable)")
    g = p.add_argument_group("gallery")
    g.add_argument("--gallery-root", help="catalog of the gallery (default data.root)")
    g.add_argument("--gallery-split", help="catalog split of the gallery (default gallery.split)")
    g.add_argument("--gallery-dir", help="a folder of images as the gallery (class sub-folders give labels)")
    g = p.add_argument_group("queries")
    g.add_argument("--query", nargs="+", metavar="IMAGE", help="query image files")
    g.add_argument("--query-split", help="a split of the gallery's catalog as queries; the gallery's split: "
                                         "leave-one-out")
    p.add_argument("--topk", type=positive_int, help="gallery items per query (default model.topk)")
    p.add_argument("--show", type=int, default=None, help="print the top-k of the first N queries (default: all "
                   "for --query images, 10 for a split)")
    p.add_argument("--num-workers", type=positive_int, help="Ray tasks (default: one per GPU, else per CPU)")
    p.add_argument("--prototype", help="gallery features saved by --dump-prototype (used instead of extracting them)")
    p.add_argument("--dump-prototype", help="save the gallery features here (a .pt tensor)")
    p.add_argument("--output", help="write the result JSON here")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default MLFLOW_TRACKING_URI or ./mlflow.db)")
    p.add_argument("--dry-run", action="store_true",
                   help="check config, checkpoint, gallery, queries and outputs, print 'ok', and stop")
    args = p.parse_args(argv)
    if args.show is not None and args.show < 0:
        p.error(f"argument --show: expected 0 or more queries, got {args.show}")
    if not args.config and not args.checkpoint:
        raise ConfigError("give --config (a retrieval config) or --checkpoint (a fewray checkpoint), or both")
    if args.gallery_dir and (args.gallery_root or args.gallery_split):
        raise ConfigError("--gallery-dir replaces --gallery-root/--gallery-split: give one or the other")
    if args.query and args.query_split:
        raise ConfigError("give query images (--query) or a query split (--query-split), not both")
    for flag, path in (("--output", args.output), ("--dump-prototype", args.dump_prototype)):
        if path:
            check_output_file(path, flag)  # before any work, not after

    from fewray.platform.retrieval import (load_retrieval_config, prepare_retrieval, print_result,
                                           retrieval_config_from_checkpoint)

    values = {key: value for key, value in (("data.root", args.gallery_root), ("gallery.split", args.gallery_split),
                                            ("gallery.folder", args.gallery_dir), ("query.split", args.query_split))
              if value is not None}
    if args.query:
        values["query.split"] = None
    if args.config:
        cfg = load_retrieval_config(args.config, args.overrides, values)
    else:
        cfg = retrieval_config_from_checkpoint(args.checkpoint, args.overrides, values)
    plan = prepare_retrieval(cfg, args.checkpoint, args.query, args.topk, args.prototype)
    if args.dry_run:
        print(f"ok: {len(plan.queries)} queries against a gallery of {len(plan.gallery)} images "
              f"({plan.feature_dim}-d features, top {plan.topk}) are ready (dry run, nothing started)")
        return 0
    from fewray.platform.retrieval import run_retrieval

    result = run_retrieval(plan, num_workers=args.num_workers, tracking_uri=args.tracking_uri,
                           dump_prototype=args.dump_prototype)
    show = args.show if args.show is not None else (None if args.query else 10)
    print_result(result, show)  # the result first: a file that cannot be written must not hide it
    finish(result, args.output)
    return 0


if __name__ == "__main__":
    run_cli(main)
