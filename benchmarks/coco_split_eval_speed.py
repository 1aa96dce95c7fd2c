"""COCO AP per class split: one COCOeval sliced by category against one COCOeval per split, side by side.

``CocoDetectionEvaluator.compute`` runs pycocotools' COCOeval once over every category and reads each class
split's AP / AP50 / AP75 from its categories' slice of the accumulated precision array; before, it ran one COCOeval
per split (ALL, BASE, NOVEL). This script times both on the same detections and checks that the numbers are equal.

Usage (from the repository root; needs ``data/coco_fsdet``)::

    python benchmarks/coco_split_eval_speed.py [--repeats 3]

Detections: the test split's ground truth (206 coco_mini val2017 images, 80 categories) with every box shifted by
a seeded 0-8 px and scored at random, plus one random false positive per image. Writes
``benchmarks/results/coco_split_eval_speed.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from machine import machine_info  # noqa: E402

from fewray.platform.errors import run_cli  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "coco_split_eval_speed"


def per_split_cocoeval(ev, merged) -> dict[str, float]:
    """The previous way: one pycocotools COCOeval per class split (AP, AP50, AP75 of each)."""
    from pycocotools.cocoeval import COCOeval

    from fewray.evaluation.coco_detection import _silent

    gt = ev._coco_gt()
    image_ids = sorted(merged["image_ids"])
    dt = ev._coco_dt(gt, sorted(merged["results"], key=lambda r: r["image_id"]))
    out = {}
    for split, ids in [("ALL", sorted(ev.categories)), *ev.class_splits.items()]:
        e = COCOeval(gt, dt, "bbox")
        e.params.catIds, e.params.imgIds = list(ids), image_ids
        _silent(e.evaluate)
        _silent(e.accumulate)
        _silent(e.summarize)
        prefix = "" if split == "ALL" else ev._prefix(split) + "_"
        for k, name in enumerate(("AP", "AP50", "AP75")):
            out[prefix + name] = float(e.stats[k]) * 100.0
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--catalog", default="data/coco_fsdet")
    args = p.parse_args(argv)
    from fewray.tasks.detection import DetectionScorer

    scorer = DetectionScorer(str(REPO / args.catalog), "test", decode=False)
    rng = np.random.default_rng(0)
    dets = []
    for r in scorer.records:
        shift = rng.uniform(0, 8, (len(r["boxes"]), 2)).astype(np.float32)
        boxes = r["boxes"] + np.concatenate([shift, shift], 1)
        fp = np.array([[0, 0, 40, 40]], np.float32)
        dets.append({"boxes": np.concatenate([boxes, fp]), "scores": rng.random(len(boxes) + 1),
                     "labels": np.concatenate([r["labels"], rng.integers(0, 80, 1)])})
    ev = scorer.evaluator
    merged = ev.merge([ev.process(scorer.outputs(dets, scorer.class_names))])
    times: dict[str, list[float]] = {"one COCOeval, sliced": [], "one COCOeval per split": []}
    same = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        new = ev.compute(merged)
        t1 = time.perf_counter()
        old = per_split_cocoeval(ev, merged)
        t2 = time.perf_counter()
        times["one COCOeval, sliced"].append(t1 - t0)
        times["one COCOeval per split"].append(t2 - t1)
        same.append(all(new[k] == old[k] for k in old))
    mean = {k: statistics.mean(v) for k, v in times.items()}
    result = {"machine": machine_info(), "images": len(scorer.records), "splits": ["ALL", *ev.class_splits],
              "seconds": times, "mean_seconds": mean, "speedup": mean["one COCOeval per split"] /
              mean["one COCOeval, sliced"], "identical": all(same), "metrics": {k: new[k] for k in old}}
    lines = ["# COCO AP per class split: one COCOeval sliced against one per split", "",
             f"`python benchmarks/coco_split_eval_speed.py --repeats {args.repeats}` ({result['machine'].get('cpu', '')}):"
             f" {len(scorer.records)} images, splits {', '.join(result['splits'])}.", "",
             "| how | seconds (mean) | runs |", "|---|---|---|"]
    lines += [f"| {k} | {mean[k]:.2f} | {', '.join(f'{x:.2f}' for x in v)} |" for k, v in times.items()]
    lines += ["", f"Speed-up {result['speedup']:.2f}x; AP / AP50 / AP75 of every split identical: {all(same)}."]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    OUT.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    run_cli(main)
