"""Detect objects in images with a trained detector: the drawn images and a JSON of boxes.

Usage::

    python pipelines/detect.py --config configs/detection/tfa/tfa_cos_lite0_coco_10shot.yaml \
        --checkpoint runs/det/tfa_cos_10shot_seed0/train_result.json IMAGE [IMAGE ...] --out DIR \
        [--score-thr 0.3] [--device cpu]

For each image, ``DIR/<image stem>_det.jpg`` shows the boxes with ``class score`` above ``--score-thr``
(mmfewshot's image demo; its issues #43 and #118 asked for it), and ``DIR/detections.json`` holds every image's
boxes (x1, y1, x2, y2 in the image's pixels), scores and class names (all detections, the threshold only
decides what is drawn). No Ray and no MLflow: the same work as ``fewray.apis.inference_detector``.
Without ``--config`` the checkpoint's stored config is used.

A query-support detector (Meta R-CNN, FSDetView, Attention-RPN) detects the classes of its kept supports (those of
its training set); ``--supports FILE`` gives it others (Attention-RPN: new classes, no fine-tuning), a JSON file::

    {"fish": [{"image": "fish1.jpg", "box": [10, 20, 200, 150]}, {"image": "fish2.jpg"}],
     "shark": [{"image": "shark1.jpg", "box": [0, 0, 90, 60]}]}

(image paths relative to the file; without ``box`` the whole image is the instance).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import _bootstrap  # noqa: F401

from fewray.platform.errors import DataError, run_cli


def read_supports(path: str) -> tuple[list[str], list[str], list[list[float] | None]]:
    """``(images, labels, boxes)`` of a supports JSON (module docstring), image paths resolved against its folder.

    Raises:
        DataError: a missing or unparsable file, an entry without ``image``, a missing image (naming it).
    """
    f = Path(path).expanduser()
    if not f.is_file():
        raise DataError(f"supports file not found: {path}")
    try:
        spec = json.loads(f.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"supports file {path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(spec, dict) or not spec:
        raise DataError(f"supports file {path} must map class names to lists of {{\"image\": ..., \"box\": ...}}")
    images, labels, boxes = [], [], []
    for name, entries in spec.items():
        for i, entry in enumerate(entries if isinstance(entries, list) else [entries]):
            if not isinstance(entry, dict) or "image" not in entry:
                raise DataError(f"supports file {path}: class '{name}' entry {i} has no \"image\"")
            image = (f.parent / entry["image"]).expanduser()
            if not image.is_file():
                raise DataError(f"supports file {path}: class '{name}': image file not found: {image}")
            images.append(str(image))
            labels.append(str(name))
            boxes.append(entry.get("box"))
    return images, labels, boxes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--config", default=None, help="experiment YAML of a detector (default: the checkpoint's own)")
    p.add_argument("--checkpoint", required=True, help="checkpoint.pt, a checkpoint directory or a train_result.json")
    p.add_argument("--out", required=True, help="directory for the drawn images and detections.json")
    p.add_argument("--score-thr", type=float, default=0.3, help="score from which a box is drawn (default 0.3)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--supports", default=None, metavar="FILE",
                   help="query-support detectors: a JSON of support images per class (module docstring)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable)")
    args = p.parse_args(argv)
    from fewray.apis.detection import inference_detector, init_detector, show_result
    from fewray.platform.cli import check_output_dir

    out = check_output_dir(args.out, "--out")
    for image in args.images:  # every input is checked before anything is written
        if not Path(image).expanduser().is_file():
            raise DataError(f"image file not found: {image}")
    stems = [Path(i).stem for i in args.images]
    if len(set(stems)) != len(stems):
        raise DataError(f"two images have the same name '{next(s for s in stems if stems.count(s) > 1)}': their "
                        f"drawn files would overwrite each other")
    supports = read_supports(args.supports) if args.supports else None
    model = init_detector(args.config, args.checkpoint, args.device, args.overrides)
    if supports is not None:
        from fewray.apis.detection import process_support_images

        try:
            classes = process_support_images(model, *supports)
        except ValueError as exc:
            raise DataError(f"--supports {args.supports}: {exc}") from None
        print(f"supports: {len(supports[0])} images of {len(classes)} classes ({', '.join(classes)})", flush=True)
    results = inference_detector(model, list(args.images))
    out.mkdir(parents=True, exist_ok=True)
    listing = []
    for image, stem, r in zip(args.images, stems, results):
        drawn = out / f"{stem}_det.jpg"
        show_result(image, r, drawn, args.score_thr)
        shown = int((r["scores"] >= args.score_thr).sum())
        print(f"{image}: {len(r['scores'])} detections, {shown} at score >= {args.score_thr:g} -> {drawn}", flush=True)
        listing.append({"image": str(image), "drawn": str(drawn), "boxes": r["boxes"].round(2).tolist(),
                        "scores": r["scores"].round(4).tolist(), "labels": list(r["labels"])})
    (out / "detections.json").write_text(json.dumps({"checkpoint": str(args.checkpoint),
                                                     "class_names": list(model.class_names),
                                                     "images": listing}, indent=1) + "\n")
    print(f"wrote {out / 'detections.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
