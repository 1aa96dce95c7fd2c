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
import sys

import _bootstrap  # noqa: F401

from fewray.platform.cli import check_output_file, finish, int_list, positive_int
from fewray.platform.errors import run_cli


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="experiment YAML (its test: section gives the defaults)")
    p.add_argument("--checkpoint", required=True, help="checkpoint.pt, a checkpoint directory, a train_result.json or models:/NAME/VERSION")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable)")
    p.add_argument("--ways", type=int, help="N classes per task (default test.ways)")
    p.add_argument("--shots", type=int_list, help="K support images per class (default test.shots); several as 1,5,10: "
                   "one run evaluates each and logs an accuracy-vs-shots plot")
    p.add_argument("--queries", type=int, help="Q query images per class (default test.queries)")
    p.add_argument("--num-tasks", type=int, help="tasks to evaluate (default test.num_tasks)")
    p.add_argument("--seed", type=int, help="episode seed (default test.seed)")
    p.add_argument("--split", help="catalog split (default test.split)")
    p.add_argument("--num-workers", type=positive_int, help="evaluation Ray tasks (default: one per GPU, else per CPU)")
    p.add_argument("--output", help="write the result JSON here")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default MLFLOW_TRACKING_URI or ./mlflow.db)")
    p.add_argument("--dry-run", action="store_true",
                   help="check the config, checkpoint, data and --output, print 'ok', and stop (no Ray, no MLflow run)")
    args = p.parse_args(argv)
    if args.output:
        check_output_file(args.output, "--output")  # before minutes of meta-test, not after

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
    if args.dry_run:
        from fewray.platform.metatest import prepare_metatest

        prepare_metatest(cfg, args.checkpoint, shots if shots else [cfg.test.shots], args.tracking_uri)
        print(f"ok: {args.config} and {args.checkpoint} are ready for a meta-test (dry run, nothing started)")
        return 0
    from fewray.platform.metatest import meta_test_checkpoint

    if shots is not None and len(shots) > 1:
        from fewray.platform.metatest import meta_test_shots

        result = meta_test_shots(cfg, args.checkpoint, shots, num_workers=args.num_workers,
                                 tracking_uri=args.tracking_uri, progress=sys.stderr.isatty())
    else:
        result = meta_test_checkpoint(cfg, args.checkpoint, num_workers=args.num_workers,
                                      tracking_uri=args.tracking_uri, progress=sys.stderr.isatty())
    for line in result.get("lines", [result.get("line")]):
        print(line, flush=True)  # the result first: a file that cannot be written must not hide it
    finish(result, args.output)
    return 0


if __name__ == "__main__":
    run_cli(main)
