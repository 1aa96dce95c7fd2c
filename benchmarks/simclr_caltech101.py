"""SimCLR pre-training of Conv4 on Caltech-101's train split (labels unused) against a randomly initialised Conv4,
both meta-tested with prototypes on the frozen backbone (5-way 1-shot and 5-shot, 2000 tasks, ci95).

Usage (from the repository root)::

    RAY_AUTH_MODE=disabled python benchmarks/simclr_caltech101.py          # about 20 min on 2 cores

Runs the user-facing pipelines as a user would:

1. ``pipelines/prepare_data.py caltech101 --source ../shared/data/caltech101 --out data/caltech101`` (if missing);
2. ``pipelines/metatrain.py --config configs/selfsup/simclr/conv4_caltech101.yaml --output-dir runs/simclr_caltech101``
   (2 Ray Train workers; reused when that output directory holds a finished run);
3. a checkpoint of the same model at its random initialisation (the config's seed), written by fewray's own
   ``save_checkpoint``: the baseline;
4. ``pipelines/metatest.py --config ... --checkpoint ... --shots 1,5 --num-tasks 2000`` for both.

Writes ``benchmarks/results/simclr_caltech101.{json,md}`` (paths relative to the repository) and prints the
table. The claim it checks: SimCLR's features beat the random ones with 95% CIs that do not overlap.
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

CONFIG = "configs/selfsup/simclr/conv4_caltech101.yaml"
OUT = REPO / "benchmarks" / "results" / "simclr_caltech101"


def random_init_checkpoint(catalog: str, directory: Path) -> Path:
    """A checkpoint of the config's model at its random initialisation (seeded like training)."""
    import torch

    from fewray.algorithms import build_classifier
    from fewray.platform.checkpoint import save_checkpoint
    from fewray.platform.config import load_config

    cfg = load_config(REPO / CONFIG, [f"data.root={catalog}"])
    torch.manual_seed(cfg.seed * 1000)  # rank 0's seed in training
    model = build_classifier(cfg.model)
    return save_checkpoint(directory, model=model.state_dict(), step=0, config=cfg.to_dict())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--catalog", default="data/caltech101")
    p.add_argument("--source", default="../shared/data/caltech101")
    p.add_argument("--runs", default="runs/simclr_caltech101")
    p.add_argument("--num-tasks", type=int, default=2000)
    args = p.parse_args(argv)
    runs = REPO / args.runs
    runs.mkdir(parents=True, exist_ok=True)
    log = runs / "benchmark.log"
    catalog = str((REPO / args.catalog).resolve())
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    if not (Path(catalog) / "catalog.json").is_file():
        pipeline("pipelines/prepare_data.py", "caltech101", "--source", args.source, "--out", catalog, log=log)
    times["catalog_seconds"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    pipeline("pipelines/metatrain.py", "--config", CONFIG, "--set", f"data.root={catalog}",
             "--output-dir", str(runs / "train"), "--tracking-uri", f"sqlite:///{runs / 'mlflow.db'}", log=log)
    times["train_seconds"] = time.perf_counter() - t0
    train = json.loads((runs / "train" / "train_result.json").read_text())

    rows = {}
    checkpoints = {"random init": random_init_checkpoint(catalog, runs / "random_init"),
                   "SimCLR": Path(train["best_checkpoint"])}
    for label, ckpt in checkpoints.items():
        out = runs / f"metatest_{label.replace(' ', '_')}.json"
        t0 = time.perf_counter()
        pipeline("pipelines/metatest.py", "--config", CONFIG, "--set", f"data.root={catalog}", "--checkpoint",
                 str(ckpt), "--shots", "1,5", "--num-tasks", str(args.num_tasks), "--output", str(out),
                 "--tracking-uri", f"sqlite:///{runs / 'mlflow.db'}", log=log)
        times[f"metatest_{label}_seconds"] = time.perf_counter() - t0
        rows[label] = json.loads(out.read_text())["results"]

    def interval(r: dict) -> tuple[float, float]:
        return r["accuracy_mean"] - r["ci95"], r["accuracy_mean"] + r["ci95"]

    separated = {str(k["shots"]): interval(s)[0] > interval(k)[1] for k, s in zip(rows["random init"], rows["SimCLR"])}
    info = machine_info()
    from fewray.platform.config import load_config
    from fewray.data.catalog import read_catalog_info

    cfg = load_config(REPO / CONFIG, [f"data.root={catalog}"])
    t, test = cfg.train, cfg.test
    test_classes = read_catalog_info(catalog)["splits"][test.split]["classes"]
    lines = [f"SimCLR Conv4 pre-trained on Caltech-101's train split (labels unused; {train['num_steps']} steps x "
             f"{t.num_workers} workers x {t.batch_size} images x 2 views, {train['train_seconds'] / 60:.1f} min) vs "
             f"the same Conv4 at its random initialisation; prototypes on the frozen backbone, {test.ways}-way, "
             f"{test.queries} queries, {args.num_tasks} tasks on the {test_classes} {test.split} classes. "
             f"Config `{CONFIG}`.", "",
             f"| backbone | {test.ways}-way 1-shot | {test.ways}-way 5-shot |", "|---|---|---|"]
    for label, res in rows.items():
        lines.append(f"| {label} | " + " | ".join(f"{r['accuracy_mean']:.2f} ± {r['ci95']:.2f}" for r in res) + " |")
    lines += ["", "CIs do not overlap (SimCLR above random): "
              + ", ".join(f"{k}-shot {'yes' if v else 'NO'}" for k, v in separated.items()),
              f"Machine: {info.get('cpu', '')}, {info.get('cores', '')} cores; reproduce: "
              f"`RAY_AUTH_MODE=disabled python benchmarks/simclr_caltech101.py`."]
    table = "\n".join(lines)
    print(table)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.with_suffix(".md").write_text(table + "\n")
    report = {"machine": info, "config": CONFIG, "train": train, "results": rows, "ci_separated": separated,
              "times": times}
    OUT.with_suffix(".json").write_text(json.dumps(repo_relative(report), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    run_cli(main)
