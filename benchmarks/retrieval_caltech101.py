"""Image retrieval on Caltech-101's 25 test classes (leave-one-out: every test image a query against all the other
test images): Recall@1/5/10 and mAP@R of a randomly initialised Conv4, a trained Conv4 and EfficientNet-Lite0's
frozen ImageNet features.

Usage (from the repository root)::

    RAY_AUTH_MODE=disabled python benchmarks/retrieval_caltech101.py      # about 10 min on 2 cores

Runs the user-facing pipelines: ``prepare_data.py caltech101`` (if ``data/caltech101`` is missing),
``metatrain.py`` with the zoo's ``configs/classification/proto_net/conv4_caltech101.yaml`` (reused when
``runs/retrieval_caltech101/protonet`` holds a finished run), then ``pipelines/retrieve.py`` three times:
``configs/retrieval/conv4_caltech101.yaml`` (random weights, seed 0), the same with ``--checkpoint`` of the trained
ProtoNet (its backbone is the encoder), and ``configs/retrieval/efficientnet_lite0_caltech101.yaml``. Writes
``benchmarks/results/retrieval_caltech101.{json,md}`` (repository-relative paths) and prints the table.
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

OUT = REPO / "benchmarks" / "results" / "retrieval_caltech101"
TRAIN_CONFIG = "configs/classification/proto_net/conv4_caltech101.yaml"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--catalog", default="data/caltech101")
    p.add_argument("--source", default="../shared/data/caltech101")
    p.add_argument("--runs", default="runs/retrieval_caltech101")
    args = p.parse_args(argv)
    runs = REPO / args.runs
    runs.mkdir(parents=True, exist_ok=True)
    log, db = runs / "benchmark.log", f"sqlite:///{runs / 'mlflow.db'}"
    catalog = str((REPO / args.catalog).resolve())
    if not (Path(catalog) / "catalog.json").is_file():
        pipeline("pipelines/prepare_data.py", "caltech101", "--source", args.source, "--out", catalog, log=log)
    pipeline("pipelines/metatrain.py", "--config", TRAIN_CONFIG, "--set", f"data.root={catalog}",
             "--output-dir", str(runs / "protonet"), "--tracking-uri", db, log=log)
    train_seconds = json.loads((runs / "protonet" / "train_result.json").read_text())["train_seconds"]
    encoders = {
        "Conv4, random weights (seed 0)": ["--config", "configs/retrieval/conv4_caltech101.yaml"],
        "Conv4, ProtoNet-trained (zoo config)": ["--config", "configs/retrieval/conv4_caltech101.yaml",
                                                 "--checkpoint", str(runs / "protonet" / "train_result.json")],
        "EfficientNet-Lite0, frozen ImageNet (224x224)": ["--config",
                                                          "configs/retrieval/efficientnet_lite0_caltech101.yaml"],
    }
    rows = {}
    for i, (label, extra) in enumerate(encoders.items()):
        out = runs / f"retrieval_{i}.json"
        t0 = time.perf_counter()
        pipeline("pipelines/retrieve.py", *extra, "--set", f"data.root={catalog}", "--show", "0",
                 "--output", str(out), "--tracking-uri", db, log=log)
        result = json.loads(out.read_text())
        rows[label] = {**result["metrics"], **result["encoder"], "similarity_fn": result["similarity_fn"],
                       "seconds": round(time.perf_counter() - t0, 1)}
    info = machine_info()
    first = next(iter(rows.values()))
    from fewray.data.catalog import read_catalog_info

    test_classes = read_catalog_info(catalog)["splits"]["test"]["classes"]
    size = read_catalog_info(catalog)["image_size"]
    lines = [f"Caltech-101 test classes ({test_classes}), leave-one-out: {first['num_queries']} queries, each "
             f"against all other test images; {first['similarity_fn'].replace('_', ' ')}; {size}x{size} catalog. "
             f"Reproduce: "
             f"`RAY_AUTH_MODE=disabled python benchmarks/retrieval_caltech101.py`.", "",
             "| encoder | Recall@1 | Recall@5 | Recall@10 | mAP@R | seconds |", "|---|---|---|---|---|---|"]
    for label, r in rows.items():
        lines.append(f"| {label} | {r['Recall@1']:.2f} | {r['Recall@5']:.2f} | {r['Recall@10']:.2f} | "
                     f"{r['mAP@R']:.2f} | {r['seconds']:.0f} |")
    lines.append(f"\nThe trained Conv4: ProtoNet, {TRAIN_CONFIG} ({train_seconds / 60:.1f} min of training, its "
                 f"train_result.json's). Machine: {info.get('cpu', '')}, {info.get('cores', '')} cores.")
    table = "\n".join(lines)
    print(table)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.with_suffix(".md").write_text(table + "\n")
    OUT.with_suffix(".json").write_text(json.dumps(repo_relative({"machine": info, "rows": rows}), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    run_cli(main)
