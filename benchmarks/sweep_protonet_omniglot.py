"""Sweep of ProtoNet Conv4 on Omniglot (8 trials: learning rate and head temperature, Optuna + ASHA), then
re-train the exported best config with ``pipelines/metatrain.py`` and compare with the trial.

Usage (from the repository root, after ``make data``)::

    python benchmarks/sweep_protonet_omniglot.py            # about 10 min on 2 cores

Runs the pipelines as a user would (subprocesses, their own local Ray), times the sweep end to end
(``pipelines/tune.py``: Ray start, 8 trials, MLflow logging), and writes
``benchmarks/results/sweep_protonet_omniglot.{json,md}``. The MLflow store is ``OUT_DIR/mlflow.db``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_info  # noqa: E402
from paths import repo_relative  # noqa: E402

from fewray.platform.errors import run_cli  # noqa: E402


def _run(cmd: list[str]) -> tuple[str, float]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")})
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc.stdout, seconds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/classification/protonet_conv4_omniglot_tune.yaml")
    p.add_argument("--out-dir", default="runs/bench_sweep")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default="benchmarks/results/sweep_protonet_omniglot")
    args = p.parse_args(argv)

    out_dir = (ROOT / args.out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{out_dir / 'mlflow.db'}"
    sets = [x for o in args.overrides for x in ("--set", o)]
    load_before = os.getloadavg()
    _, sweep_seconds = _run([sys.executable, "pipelines/tune.py", "--config", args.config, "--output-dir",
                             str(out_dir / "sweep"), "--tracking-uri", uri, *sets])
    summary = json.loads((out_dir / "sweep" / "sweep_summary.json").read_text())
    load_after_sweep = os.getloadavg()
    best = next(t for t in summary["trials"] if t["trial_id"] == summary["best_trial_id"])

    _, retrain_seconds = _run([sys.executable, "pipelines/metatrain.py", "--config", summary["best_config"],
                               "--output-dir", str(out_dir / "retrain"), "--tracking-uri", uri])
    retrain = json.loads((out_dir / "retrain" / "train_result.json").read_text())
    diff = retrain["best_val_accuracy_mean"] - best["best_accuracy_mean"]
    within = abs(diff) <= best["best_ci95"]

    info = machine_info()
    trials = summary["trials"]
    report = {"machine": info, "config": args.config, "overrides": args.overrides,
              "sweep_wall_seconds": round(sweep_seconds, 1), "sweep_seconds_in_tune": summary["sweep_seconds"],
              "num_trials": summary["num_trials"], "num_stopped_early": summary["num_stopped_early"],
              "best_trial": best, "retrain": retrain, "retrain_wall_seconds": round(retrain_seconds, 1),
              "retrain_minus_trial": diff, "retrain_within_trial_ci95": within,
              "load_average_before": load_before, "load_average_after_sweep": load_after_sweep,
              "parent_run_id": summary["parent_run_id"], "tracking_uri": uri, "trials": trials}
    lr, temp = best["params"]["train.optimizer.lr"], best["params"]["model.head.temperature"]
    lines = [
        f"Sweep of ProtoNet Conv4 on Omniglot ({args.config}): {summary['num_trials']} trials (Optuna TPE, ASHA), "
        f"one at a time, 1 Ray Train worker each; {info['cores']} cores ({info['cpu']}), {info['date']}; "
        f"load average before {load_before[0]:.1f}, after the sweep {load_after_sweep[0]:.1f} (shared machine).",
        "",
        "| trials | stopped early (ASHA) | best lr | best temperature | best trial val accuracy (%) | "
        "sweep wall time | re-run of best_config.yaml: val accuracy (%) | re-run within trial's ci95 |",
        "|---|---|---|---|---|---|---|---|",
        f"| {summary['num_trials']} | {summary['num_stopped_early']} | {lr:.4g} | {temp:.4g} | "
        f"{best['best_accuracy_mean']:.2f} ± {best['best_ci95']:.2f} (step {best['best_step']}) | "
        f"{sweep_seconds / 60:.1f} min | {retrain['best_val_accuracy_mean']:.2f} ± {retrain['best_val_ci95']:.2f} "
        f"(step {retrain['best_step']}, {retrain_seconds / 60:.1f} min) | {'yes' if within else 'no'} "
        f"({diff:+.2f}) |",
        "",
        "| trial | lr | temperature | best val accuracy (%) | ci95 | last step | outcome |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in trials:
        acc = "-" if t["best_accuracy_mean"] is None else f"{t['best_accuracy_mean']:.2f}"
        ci = "-" if t["best_ci95"] is None else f"{t['best_ci95']:.2f}"
        outcome = "stopped early" if t["stopped_early"] else t["status"]
        mark = " (best)" if t["trial_id"] == summary["best_trial_id"] else ""
        lines.append(f"| {t['trial_id']}{mark} | {t['params']['train.optimizer.lr']:.4g} | "
                     f"{t['params']['model.head.temperature']:.4g} | {acc} | {ci} | {t['last_step']} | {outcome} |")
    table = "\n".join(lines)
    print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(repo_relative(report), indent=2, default=str) + "\n")
    Path(args.out + ".md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    run_cli(main)
