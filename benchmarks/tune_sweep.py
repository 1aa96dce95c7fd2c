"""A Ray Tune sweep through ``pipelines/tune.py``, run as a user would, and its table (one row per trial).

Two sweeps ship (issue 14: a sweep over something other than a few-shot method's own accuracy knobs):

- ``configs/classification/arcface/conv4_omniglot_tune.yaml``: mmpretrain's ``ArcFaceClsHead`` margin ``m`` (the
  pre-training head of ``ArcFaceBaseline``), judged by how well the features it trains transfer to new Omniglot
  characters (5-way 1-shot meta-validation accuracy, a fine-tuned cosine head per task); 4 trials, margins
  uniform in [0, 0.7], random search, no early stopping;
- ``configs/multi_label/efficientnet_lite0_coco_frozen_tune.yaml``: a metric that is not few-shot accuracy at all,
  the multi-label task's validation mAP, over the linear probe's learning rate and weight decay (Optuna, ASHA).

Usage (from the repository root, after ``make data``; the multi-label catalog as in that config's header)::

    python benchmarks/tune_sweep.py --config configs/classification/arcface/conv4_omniglot_tune.yaml   # ~10 min
    python benchmarks/tune_sweep.py --config configs/multi_label/efficientnet_lite0_coco_frozen_tune.yaml

Prints the table and writes ``benchmarks/results/sweep_<config name>.{json,md}``; the MLflow store is
``runs/sweep_<config name>/mlflow.db`` (a parent run with one nested run per trial).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import machine_info  # noqa: E402
from paths import repo_relative  # noqa: E402
from runner import pipeline  # noqa: E402

from fewray.platform.errors import run_cli  # noqa: E402

CONFIG = "configs/classification/arcface/conv4_omniglot_tune.yaml"


def render(summary: dict, wall_seconds: float, config: str, info: dict) -> str:
    """The Markdown table of a ``sweep_summary.json``: one row per trial, sorted by the searched value."""
    keys = summary["search_keys"]
    trials = sorted(summary["trials"], key=lambda t: [t["params"].get(k) for k in keys])
    lines = [f"Ray Tune sweep of {', '.join(keys)} ({config}): {summary['num_trials']} trials, one at a time; "
             f"metric: validation {summary['metric']} ({summary['mode']}), best of the trial's validations. {wall_seconds / 60:.1f} min end to end ({summary['sweep_seconds'] / 60:.1f} in Tune) "
             f"on {info.get('cores', '')} cores {info.get('cpu', '')}, {info.get('date', '')}.", "",
             "| trial | " + " | ".join(keys) + f" | best val {summary['metric']} (%) | ci95 | at step | status |",
             "|---|" + "---|" * (len(keys) + 4)]
    for t in trials:
        vals = " | ".join(f"{t['params'][k]:.3f}" if isinstance(t["params"][k], float) else str(t["params"][k])
                          for k in keys)
        value = "-" if t["best_value"] is None else f"{t['best_value']:.2f}"
        ci = "-" if t["best_ci95"] is None else f"{t['best_ci95']:.2f}"
        mark = " (best)" if t["trial_id"] == summary["best_trial_id"] else ""
        lines.append(f"| {t['trial_id']}{mark} | {vals} | {value} | {ci} | {t['best_step']} | {t['status']} |")
    lines += ["", f"Best config exported by the sweep: `{summary['best_config']}`."]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=CONFIG)
    p.add_argument("--runs-dir", default=None, help="default runs/sweep_<config name>")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--table-only", action="store_true", help="re-render the table from the stored result JSON")
    args = p.parse_args(argv)
    from fewray.platform.config import load_config

    name = load_config(ROOT / args.config).name
    runs = (ROOT / (args.runs_dir or f"runs/sweep_{name}")).resolve()
    out = ROOT / "benchmarks" / "results" / f"sweep_{name}"
    if args.table_only:
        stored = json.loads(out.with_suffix(".json").read_text())
        table = render(stored["summary"], stored["wall_seconds"], stored["config"], stored["machine"])
        print(table)
        out.with_suffix(".md").write_text(table + "\n")
        return 0
    runs.mkdir(parents=True, exist_ok=True)
    sets = [x for o in args.overrides for x in ("--set", o)]
    t0 = time.perf_counter()
    pipeline("pipelines/tune.py", "--config", args.config, "--output-dir", str(runs / "sweep"),
             "--tracking-uri", f"sqlite:///{runs / 'mlflow.db'}", *sets, log=runs / "sweep.log")
    wall = time.perf_counter() - t0
    summary = repo_relative(json.loads((runs / "sweep" / "sweep_summary.json").read_text()))
    table = render(summary, wall, args.config, machine_info())
    print(table)
    out.with_suffix(".json").write_text(json.dumps(repo_relative(
        {"config": args.config, "overrides": args.overrides, "wall_seconds": round(wall, 1), "machine": machine_info(),
         "summary": summary}), indent=2, default=str) + "\n")
    out.with_suffix(".md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    run_cli(main)
