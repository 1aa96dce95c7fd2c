"""ProtoNet Conv4 on Omniglot: meta-train once with the benchmark config, meta-test 4 settings, print the table.

Usage (from the repository root, after ``make data``)::

    python benchmarks/protonet_omniglot.py                       # train (about 50 min on 2 cores) + test
    python benchmarks/protonet_omniglot.py --train-dir runs/bench_protonet_omniglot   # reuse a finished run

Writes ``benchmarks/results/protonet_conv4_omniglot.{json,md}``. Each row: 2000 tasks, 15 queries per
class, the same seed, one model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_info  # noqa: E402
from paths import repo_relative  # noqa: E402

from fewray.platform.config import load_config  # noqa: E402
from fewray.platform.errors import run_cli  # noqa: E402

SETTINGS = [(5, 1), (5, 5), (20, 1), (20, 5)]
PAPER = {(5, 1): 98.8, (5, 5): 99.7, (20, 1): 96.0, (20, 5): 98.9}
TARGET = {(5, 1): 97.5, (5, 5): 99.3, (20, 1): 94.0, (20, 5): 98.3}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/classification/protonet_conv4_omniglot.yaml")
    p.add_argument("--train-dir", default="runs/bench_protonet_omniglot")
    p.add_argument("--num-tasks", type=int, default=2000)
    p.add_argument("--num-workers", type=int, default=None)
    p.add_argument("--out", default="benchmarks/results/protonet_conv4_omniglot")
    args = p.parse_args(argv)

    from fewray.platform.metatest import meta_test_checkpoint
    from fewray.platform.train import run_metatrain

    cfg = load_config(args.config)
    result_file = Path(args.train_dir) / "train_result.json"
    train = json.loads(result_file.read_text()) if result_file.is_file() else {}
    if train.get("num_steps") != cfg.train.num_steps:
        train = run_metatrain(cfg, args.train_dir)
    rows = []
    for ways, shots in SETTINGS:
        test_cfg = load_config(args.config, [f"test.ways={ways}", f"test.shots={shots}", "test.queries=15",
                                             f"test.num_tasks={args.num_tasks}", "test.seed=0"])
        r = meta_test_checkpoint(test_cfg, train["best_checkpoint"], num_workers=args.num_workers)
        rows.append({**{k: r[k] for k in ("ways", "shots", "queries", "num_tasks", "accuracy_mean", "ci95", "seconds",
                                          "mlflow_run_id")},
                     "paper": PAPER[(ways, shots)], "target": TARGET[(ways, shots)]})
        print(r["line"], flush=True)
    info = machine_info()
    report = {"machine": info, "train": train, "rows": rows, "config": args.config}
    lines = [
        f"ProtoNet Conv4, Omniglot (Vinyals split), one model: {cfg.train.ways}-way {cfg.train.shots}-shot "
        f"{cfg.train.queries}-query training, {train['num_steps']} steps, best meta-val checkpoint at step "
        f"{train['best_step']}; training {train['train_seconds'] / 60:.1f} min on {info['cores']} cores "
        f"({info['cpu']}), {info['date']}.",
        "",
        "| setting | accuracy (%) | ci95 | tasks | paper | target | meta-test time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['ways']}-way {r['shots']}-shot | {r['accuracy_mean']:.2f} | {r['ci95']:.2f} | "
                     f"{r['num_tasks']} | {r['paper']} | >= {r['target']} | {r['seconds']:.1f} |")
    table = "\n".join(lines)
    print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(repo_relative(report), indent=2) + "\n")
    Path(args.out + ".md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    run_cli(main)
