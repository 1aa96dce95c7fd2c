"""MAML Conv4 on Omniglot 5-way 1-shot and 5-shot with the paper's settings in a CPU budget: the meta-validation curve
against the tasks seen, the meta-test accuracy, and how many tasks the curve says the paper's number would take.

Configs (the paper's settings: second order, one inner step of 0.4, three at test, meta-batches of 32, Adam 1e-3):
``configs/classification/maml/conv4_omniglot_5way{1,5}shot_metabatch32.yaml``, each sized to ~60 minutes of 2 cores.
Per setting: ``run_metatrain`` (what ``pipelines/metatrain.py`` runs: Ray Data meta-batches, Ray Train, MLflow), the
meta-validation history from MLflow (``val_accuracy_mean`` against ``episodes_seen``), then
``meta_test_checkpoint`` (``pipelines/metatest.py``) of the best checkpoint on 2000 test tasks with 15 queries.

Extrapolation: the error ``100 - accuracy`` of the meta-validation points of the second half of the run fitted as a
power law of the tasks seen (``err = a * tasks^-b``, least squares in log-log); the tasks at which the fit reaches
the paper's error. A rough guide, stated as such: curves flatten, so it is a lower bound when b is over-estimated.

Usage (from the repository root, after ``make data``; each setting resumes / reuses a finished run)::

    RAY_AUTH_MODE=disabled python benchmarks/maml_omniglot_budget.py [--shots 1,5]

Writes ``benchmarks/results/maml_omniglot_budget.{json,md}`` and the curves ``.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from machine import machine_info  # noqa: E402
from paths import repo_relative  # noqa: E402

from fewray.platform.config import load_config  # noqa: E402
from fewray.platform.errors import run_cli  # noqa: E402

CONFIG = "configs/classification/maml/conv4_omniglot_5way{k}shot_metabatch32.yaml"
PAPER = {1: 98.7, 5: 99.9}
PAPER_TASKS = 60000 * 32  # 60k meta-updates of 32 tasks


def tasks_to_reach(points: list[tuple[float, float]], target: float) -> tuple[float | None, float, float]:
    """``(tasks, a, b)``: the power law ``100 - acc = a * tasks^-b`` fitted to the second half of ``points``
    (``(tasks, accuracy)``), and the tasks at which it reaches ``target`` accuracy (None if it never does).

    Example::

        >>> pts = [(t, 100 - 50 * t ** -0.5) for t in (100, 400, 1600, 6400)]
        >>> round(tasks_to_reach(pts, 99.0)[0])
        2500
    """
    half = points[len(points) // 2:] if len(points) >= 4 else points
    x = np.log([t for t, _ in half])
    y = np.log([max(100.0 - a, 1e-6) for _, a in half])
    slope, intercept = np.polyfit(x, y, 1)
    a, b = math.exp(intercept), -slope
    if b <= 0:
        return None, a, b
    return (a / (100.0 - target)) ** (1.0 / b), a, b


def run_setting(shots: int, runs: Path, num_tasks: int) -> dict:
    """Train (or reuse), read the curve, meta-test: one setting's row."""
    from mlflow.tracking import MlflowClient

    from fewray.platform.metatest import meta_test_checkpoint
    from fewray.platform.train import run_metatrain

    config = CONFIG.format(k=shots)
    out = runs / f"maml_omniglot_5way{shots}shot_mb32"
    uri = f"sqlite:///{(runs / 'mlflow.db').resolve()}"
    cfg = load_config(config)
    done = out / "train_result.json"
    train = json.loads(done.read_text()) if done.is_file() else {}
    if train.get("num_steps") != cfg.train.num_steps:
        train = run_metatrain(cfg, out, tracking_uri=uri)
    client = MlflowClient(train.get("tracking_uri", uri))
    per_step = cfg.train.meta_batch_size
    curve = [(m.step * per_step, m.value) for m in
             sorted(client.get_metric_history(train["mlflow_run_id"], "val_accuracy_mean"), key=lambda m: m.step)]
    test = {}
    if num_tasks:
        test_cfg = load_config(config, [f"test.num_tasks={num_tasks}"])
        test = meta_test_checkpoint(test_cfg, train["best_checkpoint"], tracking_uri=train.get("tracking_uri", uri))
    need, a, b = tasks_to_reach(curve, PAPER[shots])
    print(test.get("line", ""), flush=True)
    return {"shots": shots, "config": config, "meta_batch_size": per_step, "num_steps": cfg.train.num_steps,
            "tasks_seen": cfg.train.num_steps * per_step, "train_minutes": round(train["train_seconds"] / 60, 1),
            "best_val_accuracy_mean": train["best_val_accuracy_mean"], "best_step": train["best_step"],
            "curve": curve, "test_accuracy_mean": test.get("accuracy_mean"), "test_ci95": test.get("ci95"),
            "test_num_tasks": test.get("num_tasks"), "test_seconds": test.get("seconds"), "paper": PAPER[shots],
            "fit": {"a": a, "b": b}, "tasks_to_paper_by_fit": need, "mlflow_run_id": train["mlflow_run_id"]}


def write(rows: list[dict], out: str) -> str:
    """The Markdown table and the curves' PNG."""
    from fewray.platform.plots import plt

    info = machine_info()
    lines = [f"MAML Conv4, Omniglot 28x28 5-way, the paper's settings (second order, 1 inner step of 0.4, 3 at test, "
             f"meta-batches of 32, Adam 1e-3), a ~60-minute budget each. {info['date']}, {info['cpu']}, "
             f"{info['cores']} cores, torch {info['torch']}, Ray {info['ray']}.", "",
             "| setting | meta-updates x tasks | train min | best val acc | test acc (2000 tasks, 15 q) | paper | "
             "tasks to the paper by the curve's power-law fit | the paper's tasks |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        need = r["tasks_to_paper_by_fit"]
        test = "-" if r["test_accuracy_mean"] is None else f"{r['test_accuracy_mean']:.2f} ± {r['test_ci95']:.2f}"
        lines.append(f"| 5-way {r['shots']}-shot | {r['num_steps']} x {r['meta_batch_size']} = {r['tasks_seen']} | "
                     f"{r['train_minutes']} | {r['best_val_accuracy_mean']:.2f} | {test} | {r['paper']} | "
                     f"{'never (flat)' if need is None else f'{need:,.0f}'} (b = {r['fit']['b']:.2f}) | "
                     f"{PAPER_TASKS:,} |")
    lines += ["", "Meta-validation accuracy (300 tasks, seed 1) against tasks seen:", ""]
    for r in rows:
        lines.append(f"- 5-way {r['shots']}-shot: " + ", ".join(f"{t:,.0f}: {a:.1f}" for t, a in r["curve"]))
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        t, a = zip(*r["curve"])
        ax.plot(t, a, marker="o", label=f"5-way {r['shots']}-shot (paper {r['paper']})")
    ax.set_xscale("log")
    ax.set_xlabel("tasks seen")
    ax.set_ylabel("meta-validation accuracy (%)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out + ".png", dpi=80)
    plt.close(fig)
    lines += ["", f"![curves]({Path(out).name}.png)"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shots", default="1,5")
    p.add_argument("--runs", default="runs/maml_budget")
    p.add_argument("--num-tasks", type=int, default=2000, help="meta-test tasks (0: skip the meta-test)")
    p.add_argument("--out", default="benchmarks/results/maml_omniglot_budget")
    args = p.parse_args(argv)
    runs = REPO / args.runs
    runs.mkdir(parents=True, exist_ok=True)
    results_file = Path(args.out + ".json")
    prior = json.loads(results_file.read_text()) if results_file.is_file() else {"rows": []}
    rows = {r["shots"]: r for r in prior["rows"]}
    for k in [int(s) for s in args.shots.split(",")]:
        rows[k] = run_setting(k, runs, args.num_tasks)
        ordered = [rows[s] for s in sorted(rows)]
        results_file.parent.mkdir(parents=True, exist_ok=True)
        results_file.write_text(json.dumps(repo_relative({"machine": machine_info(), "rows": ordered}), indent=2)
                                + "\n")
        md = write(ordered, args.out)
        Path(args.out + ".md").write_text(md)
        print(md, flush=True)
    return 0


if __name__ == "__main__":
    run_cli(main)
