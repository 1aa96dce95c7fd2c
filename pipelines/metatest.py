"""Meta-test a checkpoint: tasks fanned out as Ray tasks, mean accuracy with a 95% confidence interval.

Usage::

    python pipelines/metatest.py --config configs/classification/protonet_conv4_omniglot.yaml \
        --checkpoint runs/protonet/train_result.json-or-checkpoint.pt-or-models:/NAME/VERSION \
        [--ways 5] [--shots 1] [--queries 15] [--num-tasks 2000] [--seed 0] [--num-workers W] [--output result.json]

On a cluster: ``ray job submit --working-dir . -- python pipelines/metatest.py ...`` (the same command).
Prints ``5-way 1-shot: accuracy 98.61% ± 0.21 (95% CI, 2000 tasks)``; ``--output`` writes the JSON
(``accuracy_mean``, ``accuracy_std``, ``ci95`` in percent, ``num_tasks``, ``ways``, ``shots``,
``queries``, ``seed``, ``mlflow_run_id``, ...). ``--shots 1,5,10`` evaluates each shot count in one MLflow run
(one printed line each; the JSON holds ``results``, one summary per shot count, and ``lines``) and logs
``plots/accuracy_vs_shots.png``. ``--checkpoint models:/NAME/VERSION`` reads a registered model.
"""

from __future__ import annotations

import argparse
import json
import sys

import _bootstrap  # noqa: F401

from fewray.platform.errors import run_cli


def _shots(text: str) -> list[int]:
    """``"5"`` -> ``[5]``; ``"1,5,10"`` -> ``[1, 5, 10]`` (argparse type)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or integers like 1,5,10, got '{text}'") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected an integer or integers like 1,5,10, got '{text}'")
    return values  # ranges are checked by the config (test.shots >= 1), with the config key in the error


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="experiment YAML (its test: section gives the defaults)")
    p.add_argument("--checkpoint", required=True, help="checkpoint.pt, a checkpoint directory, a train_result.json or models:/NAME/VERSION")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable)")
    p.add_argument("--ways", type=int, help="N classes per task (default test.ways)")
    p.add_argument("--shots", type=_shots, help="K support images per class (default test.shots); several as 1,5,10: "
                   "one run evaluates each and logs an accuracy-vs-shots plot")
    p.add_argument("--queries", type=int, help="Q query images per class (default test.queries)")
    p.add_argument("--num-tasks", type=int, help="tasks to evaluate (default test.num_tasks)")
    p.add_argument("--seed", type=int, help="episode seed (default test.seed)")
    p.add_argument("--split", help="catalog split (default test.split)")
    p.add_argument("--num-workers", type=int, help="evaluation Ray tasks (default: one per GPU, else per CPU)")
    p.add_argument("--output", help="write the result JSON here")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default MLFLOW_TRACKING_URI or ./mlflow.db)")
    args = p.parse_args(argv)

    from fewray.platform.config import load_config

    overrides = list(args.overrides)
    shots = args.shots
    if shots is not None and len(shots) == 1:
        args.shots = shots[0]
    elif shots is not None:
        args.shots = None  # several shot counts: test.shots stays, meta_test_shots loops over them
    for key in ("ways", "shots", "queries", "num_tasks", "seed", "split"):
        value = getattr(args, key)
        if value is not None:
            overrides.append(f"test.{key}={value}")
    cfg = load_config(args.config, overrides)  # a bad config fails here, before Ray and MLflow are imported
    from fewray.platform.metatest import meta_test_checkpoint

    if shots is not None and len(shots) > 1:
        from fewray.platform.metatest import meta_test_shots

        result = meta_test_shots(cfg, args.checkpoint, shots, num_workers=args.num_workers,
                                 tracking_uri=args.tracking_uri, progress=sys.stderr.isatty())
    else:
        result = meta_test_checkpoint(cfg, args.checkpoint, num_workers=args.num_workers,
                                      tracking_uri=args.tracking_uri, progress=sys.stderr.isatty())
    if args.output:
        from pathlib import Path

        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    for line in result.get("lines", [result.get("line")]):
        print(line)
    return 0


if __name__ == "__main__":
    run_cli(main)
