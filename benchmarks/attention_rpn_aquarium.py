"""Attention-RPN without fine-tuning: the COCO base-trained detector given 10 support instances of each of
aquarium's 7 classes (none a COCO class), evaluated on aquarium's test images: AP50 per class, three ways a user
would run it.

Usage (from the repository root, after ``benchmarks/fewshot_det_coco.py --stage qs_base``)::

    RAY_AUTH_MODE=disabled python benchmarks/attention_rpn_aquarium.py       # ~5 min on 2 cores

1. ``pipelines/evaluate.py --config configs/detection/attention_rpn/lite0_fpn_aquarium_10shot_supports.yaml
   --checkpoint runs/det/attention_rpn_base/train_result.json``: the config's ``data.few_shot`` names the supports
   (TFA's seeded 10-shot set of the train split), ``model_init`` on the driver, the test split fanned out to Ray
   tasks, one COCOeval;
2. the same supports through the API (``init_detector``, ``fewray.apis.detection.process_support_images`` with each
   instance's image file and box, ``inference_detector`` on every test image), scored by the same evaluator;
3. ``pipelines/detect.py --supports FILE`` (the supports as JSON) on three test images: drawn images and boxes.

No weight changes in any of them. Writes ``benchmarks/results/attention_rpn_aquarium.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from machine import machine_info  # noqa: E402
from paths import repo_relative  # noqa: E402
from runner import pipeline  # noqa: E402

from fewray.platform.errors import run_cli  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "attention_rpn_aquarium"
CONFIG = "configs/detection/attention_rpn/lite0_fpn_aquarium_10shot_supports.yaml"
SOURCE = "../shared/data/aquarium"


def support_list(cfg) -> tuple[list[str], list[str], list[list[float]]]:
    """The config's support instances as ``(image files, class names, boxes)`` (the images of ../shared/data)."""
    from fewray.data.detection.query_support import support_set
    from fewray.data.detection.training import model_classes, training_records

    d = cfg.data
    records = training_records(d.root, "train", d.classes, d.few_shot.model_dump(), with_images=False)
    names = model_classes(d.root, d.classes)
    images, labels, boxes = [], [], []
    for label, r, b in support_set(records, len(names)):
        images.append(str(REPO / SOURCE / "train" / records[r]["file_name"]))
        labels.append(names[label])
        boxes.append([float(v) for v in records[r]["boxes"][b]])
    return images, labels, boxes


def through_api(cfg, checkpoint: str, supports) -> dict[str, float]:
    """AP50 per class of the API path (2 above)."""
    from fewray.apis.detection import inference_detector, init_detector, process_support_images
    from fewray.tasks.detection import DetectionScorer, decode_record_image

    model = init_detector(cfg, checkpoint)
    process_support_images(model, *supports)
    scorer = DetectionScorer(cfg.data.root, "test", decode=False, classwise=True)
    dets = []
    for rec in scorer.records:
        r = inference_detector(model, decode_record_image(rec).transpose(1, 2, 0))
        dets.append({"boxes": r["boxes"], "scores": r["scores"], "labels": r["label_ids"]})
    ev = scorer.evaluator
    return scorer.metrics(ev.merge([ev.process(scorer.outputs(dets, list(model.class_names)))]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="runs/det/attention_rpn_base/train_result.json")
    p.add_argument("--runs", default="runs/det/attention_rpn_aquarium")
    args = p.parse_args(argv)
    from fewray.platform.config import load_config
    from fewray.tasks import task_for

    runs = REPO / args.runs
    runs.mkdir(parents=True, exist_ok=True)
    log, db = runs / "benchmark.log", f"sqlite:///{runs / 'mlflow.db'}"
    if not (REPO / "data/aquarium_det/catalog.json").is_file():
        pipeline("pipelines/prepare_data.py", "detection", "--source", SOURCE, "--out", "data/aquarium_det",
                 "--class-splits", "configs/detection/aquarium_class_splits.yaml", "--min-bbox-area", "1", log=log)
    cfg = load_config(REPO / CONFIG)
    cfg = task_for(cfg).resolve_config(cfg)
    names = list(cfg.model.class_names)
    t0 = time.perf_counter()
    ev = runs / "evaluate_test.json"
    pipeline("pipelines/evaluate.py", "--config", CONFIG, "--checkpoint", args.checkpoint, "--output", str(ev),
             "--tracking-uri", db, log=log)
    cli = json.loads(ev.read_text())
    t1 = time.perf_counter()
    supports = support_list(cfg)
    api = through_api(cfg, str(REPO / args.checkpoint), supports)
    t2 = time.perf_counter()
    spec: dict[str, list] = {}
    for image, label, box in zip(*supports):
        spec.setdefault(label, []).append({"image": image, "box": box})
    (runs / "supports.json").write_text(json.dumps(spec, indent=1) + "\n")
    tests = sorted((REPO / SOURCE / "test").glob("*.jpg"))[:3]
    pipeline("pipelines/detect.py", "--config", CONFIG, "--checkpoint", args.checkpoint, "--supports",
             str(runs / "supports.json"), *map(str, tests), "--out", str(runs / "drawn"), log=log)
    detected = json.loads((runs / "drawn" / "detections.json").read_text())
    per_class = {n: {"evaluate.py": cli.get(f"AP50_{n}"), "api": api.get(f"AP50_{n}")} for n in names}
    result = {"machine": machine_info(), "config": CONFIG, "checkpoint": args.checkpoint,
              "supports_per_class": {n: supports[1].count(n) for n in names},
              "AP50": {"evaluate.py": cli["AP50"], "api": api["AP50"]}, "AP": {"evaluate.py": cli["AP"], "api": api["AP"]},
              "AP50_per_class": per_class, "evaluate_seconds": round(t1 - t0, 1), "api_seconds": round(t2 - t1, 1),
              "detect_py": [{"image": Path(i["image"]).name, "detections": len(i["scores"]),
                             "at_0.3": sum(s >= 0.3 for s in i["scores"])} for i in detected["images"]]}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.with_suffix(".json").write_text(json.dumps(repo_relative(result), indent=2) + "\n")
    fmt = lambda v: "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"  # noqa: E731
    lines = ["# Attention-RPN without fine-tuning: COCO base model + 10 supports per aquarium class", "",
             f"`python benchmarks/attention_rpn_aquarium.py` ({result['machine'].get('cpu', '')}): "
             f"{CONFIG}, checkpoint `{args.checkpoint}` (no weight changed), supports: TFA's seeded 10-shot set of "
             f"aquarium's train split; COCOeval AP50 (percent) on its 63 test images.", "",
             "| class | supports | AP50, pipelines/evaluate.py | AP50, process_support_images + inference_detector |",
             "|---|---|---|---|"]
    for n in names:
        lines.append(f"| {n} | {result['supports_per_class'][n]} | {fmt(per_class[n]['evaluate.py'])} | "
                     f"{fmt(per_class[n]['api'])} |")
    lines += [f"| all | {len(supports[0])} | {fmt(cli['AP50'])} | {fmt(api['AP50'])} |", "",
              f"Times: evaluate.py {result['evaluate_seconds']:.0f} s (Ray start, model_init, fan-out), API "
              f"{result['api_seconds']:.0f} s. `pipelines/detect.py --supports`: "
              + ", ".join(f"{d['image']} {d['at_0.3']} boxes at score >= 0.3" for d in result["detect_py"]) + "."]
    OUT.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    run_cli(main)
