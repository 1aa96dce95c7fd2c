"""Multi-label classification on COCO images (80 classes): mAP, CF1 and OF1 (thr 0.5) on a test split of a
label-frequency baseline, EfficientNet-Lite0's frozen ImageNet features under a linear multi-label head, and
EfficientNet-Lite0 fine-tuned.

Usage (from the repository root)::

    RAY_AUTH_MODE=disabled python benchmarks/multi_label_coco.py          # about 11 min on 2 busy cores

**Data** (``configs/multi_label/coco_split.yaml``, the COCO images in ``../shared/data``, all from COCO 2017 with
their original image and category ids; no image is in two splits):

- train: coco128 (128 images of COCO train2017, ``instances_coco128.json``) + coco_mini's train2017 (209 images;
  none of them in coco128): 337 images, 3 of them without any object (kept, with an empty label set);
- val: the first half of coco_mini's val2017 (206 images) sorted by COCO image id: 103 images (picks the best
  checkpoint by mAP);
- test: the second half: 103 images (the reported numbers; 77 of the 80 classes have a positive image there,
  and mAP averages over those, mmpretrain's rule).

Labels: the categories of each image's COCO annotations (crowd ones included); images stretched to 224x224.

**Rows**:

1. label frequency: every test image scored by each class's frequency among the train images (no model): the
   mAP any ranking that ignores the image gets; no class reaches the 0.5 threshold, so CF1 and OF1 are 0;
2. ``configs/multi_label/efficientnet_lite0_coco_frozen.yaml``: ``ImageClassifier`` = EfficientNet-Lite0 frozen
   (ImageNet weights, batch norm statistics kept) + ``MultiLabelLinearClsHead`` (a linear probe);
3. ``configs/multi_label/efficientnet_lite0_coco_finetune.yaml``: the same, the whole network fine-tuned (the
   backbone at 0.01x the head's learning rate).

Runs the user-facing pipelines as a user would: ``pipelines/prepare_data.py multilabel --split-file ...`` (if
``data/coco_ml`` is missing), ``pipelines/metatrain.py`` for each config (the ``multi_label`` training task on
the fewray runtime: Ray Data stream, Ray Train, best checkpoint by validation mAP, MLflow; a finished run in its
output directory is reused) and ``pipelines/evaluate.py`` on the test split (images scored by Ray tasks,
``MultiLabelEvaluator``'s process / merge / compute). The baseline goes through the same evaluator. Writes
``benchmarks/results/multi_label_coco.{json,md}`` (repository-relative paths) and prints the table.
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

OUT = REPO / "benchmarks" / "results" / "multi_label_coco"
SPLIT_FILE = "configs/multi_label/coco_split.yaml"
CONFIGS = {
    "EfficientNet-Lite0 frozen + MultiLabelLinearClsHead": "configs/multi_label/efficientnet_lite0_coco_frozen.yaml",
    "EfficientNet-Lite0 fine-tuned + MultiLabelLinearClsHead": "configs/multi_label/efficientnet_lite0_coco_finetune.yaml",
}
METRICS = ("mAP", "CP", "CR", "CF1", "OP", "OR", "OF1")


def label_frequency_baseline(catalog: str, split: str = "test", thr: float = 0.5) -> dict[str, float]:
    """Every ``split`` image scored by each class's frequency among the train images, through
    :class:`~fewray.evaluation.multi_label.MultiLabelEvaluator` (one shard)."""
    import numpy as np

    from fewray.evaluation.multi_label import MultiLabelEvaluator
    from fewray.data.multi_label import load_multi_label_split

    train = load_multi_label_split(catalog, "train").targets
    test = load_multi_label_split(catalog, split).targets
    freq = (train == 1).mean(0).astype(np.float32)
    ev = MultiLabelEvaluator(thr=thr)
    return ev.compute(ev.merge([ev.process(np.tile(freq, (len(test), 1)), test)]))


def write_results(catalog: str, rows: dict[str, dict], times: dict[str, float]) -> str:
    """Print the table and write ``benchmarks/results/multi_label_coco.{md,json}``; returns the table."""
    from fewray.platform.config import load_config
    from fewray.data.catalog import read_catalog_info

    info = read_catalog_info(catalog)
    counts = {s: v["images"] for s, v in info["splits"].items()}
    schedules = []
    for config in CONFIGS.values():
        t = load_config(REPO / config, [f"data.root={catalog}"]).train
        epochs = t.num_steps * t.batch_size * t.num_workers / counts["train"]
        schedules.append(f"{'frozen' if 'frozen' in config else 'fine-tuned'}: {t.num_steps} steps x {t.batch_size} "
                         f"images ({epochs:.1f} epochs), best of {t.num_steps // t.val_interval} validations")
    machine = machine_info()
    lines = [f"Multi-label classification on COCO 2017 images ({info['num_classes']} classes; split "
             f"`{SPLIT_FILE}`: {counts['train']} train images = coco128 + coco_mini train2017, {counts['val']} val and "
             f"{counts['test']} test = coco_mini val2017 cut in two by image id), {info['image_size']}x"
             f"{info['image_size']}. Test split; CF1 / OF1 at threshold 0.5; mAP over the classes with a positive "
             f"test image. Training through `pipelines/metatrain.py` (best checkpoint by validation mAP; "
             f"{'; '.join(schedules)}), testing through `pipelines/evaluate.py`.", "",
             "| model | mAP | CF1 | OF1 | val mAP (best checkpoint) | training time |", "|---|---|---|---|---|---|"]
    for label, row in rows.items():
        m = row["test"]
        when = "-" if not row["train_seconds"] else f"{row['train_seconds'] / 60:.1f} min"
        val = f"{row['train']['best_val_mAP']:.2f}" if row.get("train") else "-"
        lines.append(f"| {label} | {m['mAP']:.2f} | {m['CF1']:.2f} | {m['OF1']:.2f} | {val} | {when} |")
    frozen, tuned = (rows[label] for label in CONFIGS)
    swap = ((frozen["train"]["best_val_mAP"] > tuned["train"]["best_val_mAP"])
            != (frozen["test"]["mAP"] > tuned["test"]["mAP"]))
    lines += ["", f"Val and test hold {counts['val']} and {counts['test']} images"
              + (" (small: the frozen and fine-tuned models change order between val and test)" if swap else "")
              + f". Machine: {machine.get('cpu', '')}, {machine.get('cores', '')} cores (shared with other jobs); "
              f"reproduce: `RAY_AUTH_MODE=disabled python benchmarks/multi_label_coco.py`."]
    table = "\n".join(lines)
    print(table)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.with_suffix(".md").write_text(table + "\n")
    splits = {s: {k: v for k, v in d.items() if k != "positives_per_class"} for s, d in info["splits"].items()}
    report = {"machine": machine, "split_file": SPLIT_FILE, "catalog": {"dataset": info["dataset"],
              "num_classes": info["num_classes"], "image_size": info["image_size"], "splits": splits},
              "rows": rows, "times": times}
    OUT.with_suffix(".json").write_text(json.dumps(repo_relative(report), indent=2) + "\n")
    return table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--catalog", default="data/coco_ml")
    p.add_argument("--source", default="../shared/data")
    p.add_argument("--runs", default="runs/multi_label_coco")
    args = p.parse_args(argv)
    runs = REPO / args.runs
    runs.mkdir(parents=True, exist_ok=True)
    log, db = runs / "benchmark.log", f"sqlite:///{runs / 'mlflow.db'}"
    catalog = str((REPO / args.catalog).resolve())
    times: dict[str, float] = {}
    t0 = start = time.perf_counter()
    if not (Path(catalog) / "catalog.json").is_file():
        pipeline("pipelines/prepare_data.py", "multilabel", "--source", args.source, "--split-file", SPLIT_FILE,
                 "--out", catalog, log=log)
    times["catalog_seconds"] = round(time.perf_counter() - t0, 1)

    rows: dict[str, dict] = {"label frequency (train), no model": {
        "test": label_frequency_baseline(catalog), "train_seconds": 0.0, "config": None}}
    for label, config in CONFIGS.items():
        name = Path(config).stem
        t0 = time.perf_counter()
        pipeline("pipelines/metatrain.py", "--config", config, "--set", f"data.root={catalog}",
                 "--output-dir", str(runs / name), "--tracking-uri", db, log=log)
        times[f"{name}_train_seconds"] = round(time.perf_counter() - t0, 1)
        train = json.loads((runs / name / "train_result.json").read_text())
        out = runs / f"evaluate_{name}.json"
        t0 = time.perf_counter()
        pipeline("pipelines/evaluate.py", "--config", config, "--set", f"data.root={catalog}", "--checkpoint",
                 str(runs / name / "train_result.json"), "--output", str(out), "--tracking-uri", db, log=log)
        times[f"{name}_evaluate_seconds"] = round(time.perf_counter() - t0, 1)
        rows[label] = {"test": json.loads(out.read_text()), "train": train, "train_seconds": train["train_seconds"],
                       "config": config}

    times["total_seconds"] = round(time.perf_counter() - start, 1)
    write_results(catalog, rows, times)
    return 0


if __name__ == "__main__":
    run_cli(main)
