"""Cross-domain few-shot detection: the COCO base detector (``benchmarks/fewshot_det_coco.py --stage base``)
fine-tuned with K = 10 shots of each class on Aquarium (7 classes, Roboflow's COCO export) and on BCCD (3 blood-cell
classes, Pascal VOC), evaluated on each test split: AP50 per class.

Usage (from the repository root, after the base stage)::

    RAY_AUTH_MODE=disabled python benchmarks/fewshot_det_cross_domain.py      # ~10 min on 2 cores

Every step is a command a user types for their own data (the configs' headers list them):
``pipelines/prepare_data.py detection --class-splits configs/detection/<ds>_class_splits.yaml`` (if the catalog is
missing), ``pipelines/metatrain.py --config configs/detection/tfa/cos_lite0_fpn_<ds>_10shot.yaml`` (TFA w/cos,
surgery from the COCO base model: no class is shared, every predictor row starts random) and
``pipelines/evaluate.py``: Aquarium is scored by COCOeval (AP50 at IoU 0.5, 101 points), BCCD as a VOC release by
VOC07 11-point AP50 (difficult boxes ignored). Writes ``benchmarks/results/fewshot_det_cross_domain.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
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

OUT = REPO / "benchmarks" / "results" / "fewshot_det_cross_domain"
DATASETS = {
    "aquarium": ("../shared/data/aquarium", ["--min-bbox-area", "1"], "COCOeval AP50 (101 points)"),
    "bccd": ("../shared/data/bccd", [], "VOC07 11-point AP50"),
}


def run(ds: str, args, log: Path, db: str) -> dict:
    source, extra, metric = DATASETS[ds]
    catalog = f"data/{ds}_det"
    if not (REPO / catalog / "catalog.json").is_file():
        pipeline("pipelines/prepare_data.py", "detection", "--source", source, "--out", catalog, "--class-splits",
                 f"configs/detection/{ds}_class_splits.yaml", *extra, log=log)
    config = f"configs/detection/tfa/cos_lite0_fpn_{ds}_10shot.yaml"
    out_dir = REPO / args.runs / f"{ds}_10shot"
    sets = ["--set", f"model.init_from={args.base_dir}/train_result.json"]
    t0 = time.perf_counter()
    pipeline("pipelines/metatrain.py", "--config", config, *sets, "--output-dir", str(out_dir), "--tracking-uri", db,
             log=log)
    train = json.loads((out_dir / "train_result.json").read_text())
    t1 = time.perf_counter()
    ev = out_dir / "evaluate_test.json"
    pipeline("pipelines/evaluate.py", "--config", config, *sets, "--checkpoint", str(out_dir / "train_result.json"),
             "--output", str(ev), "--tracking-uri", db, log=log)
    test = json.loads(ev.read_text())
    return {"config": config, "metric": metric, "AP50": test["AP50"],
            "per_class_AP50": {k[len("AP50_"):]: v for k, v in test.items() if k.startswith("AP50_")},
            "num_images": test["num_images"], "train_seconds": train["train_seconds"],
            "evaluate_seconds": round(time.perf_counter() - t1, 1), "wall_seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="aquarium,bccd")
    p.add_argument("--base-dir", default="runs/det/base")
    p.add_argument("--runs", default="runs/det")
    args = p.parse_args(argv)
    runs = REPO / args.runs
    runs.mkdir(parents=True, exist_ok=True)
    log, db = runs / "cross_domain.log", f"sqlite:///{runs / 'mlflow.db'}"
    results = {"machine": machine_info(), "rows": {}}
    if OUT.with_suffix(".json").is_file():
        results["rows"] = json.loads(OUT.with_suffix(".json").read_text())["rows"]
    for ds in args.datasets.split(","):
        results["rows"][ds] = run(ds, args, log, db)
        OUT.with_suffix(".json").write_text(json.dumps(repo_relative(results), indent=2) + "\n")
    lines = ["# Cross-domain few-shot detection: the COCO base detector + TFA w/cos, K = 10", "",
             "`python benchmarks/fewshot_det_cross_domain.py`. AP50 in percent on each test split.", "",
             "| dataset | metric | AP50 | AP50 per class | budget | train + eval time |", "|---|---|---|---|---|---|"]
    for ds, r in results["rows"].items():
        per = ", ".join(f"{k} {v:.1f}" for k, v in r["per_class_AP50"].items())
        lines.append(f"| {ds} ({r['num_images']} test images) | {r['metric']} | {r['AP50']:.2f} | {per} | "
                     f"200 steps x 2 images | {r['train_seconds'] / 60:.1f} + {r['evaluate_seconds'] / 60:.1f} min |")
    text = "\n".join(lines) + "\n"
    OUT.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    run_cli(main)
