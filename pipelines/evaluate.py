"""Evaluate a multi-label or detection checkpoint on a catalog split: images scored by Ray tasks, one MLflow run
(multi-label: mAP / CF1 / OF1; detection: COCO AP, AP50, AP75 for all classes and per class split, one COCOeval
over the detections of every task).

Usage::

    python pipelines/evaluate.py --config configs/multi_label/efficientnet_lite0_coco_frozen.yaml \
        --checkpoint runs/ml_frozen/train_result.json-or-checkpoint.pt [--split test] [--num-workers W] \
        [--output result.json]

The multi-label counterpart of ``pipelines/metatest.py`` (fewray/platform/evaluate.py). Prints
``test split (103 images): mAP 52.10, CF1 25.31, OF1 44.20 (thr 0.5)``; ``--output`` writes the JSON (``mAP``,
``CP``, ``CR``, ``CF1``, ``OP``, ``OR``, ``OF1`` in percent, ``split``, ``num_images``, ``mlflow_run_id``, ...).
"""

from __future__ import annotations

import argparse

import _bootstrap  # noqa: F401

from fewray.platform.cli import check_output_file, finish, positive_int
from fewray.platform.errors import run_cli


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="experiment YAML of a multi-label model")
    p.add_argument("--checkpoint", required=True, help="checkpoint.pt, a checkpoint directory or a train_result.json")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable)")
    p.add_argument("--split", help="catalog split (default test.split)")
    p.add_argument("--num-workers", type=positive_int, help="Ray tasks (default: one per GPU, else per CPU)")
    p.add_argument("--output", help="write the result JSON here")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default MLFLOW_TRACKING_URI or ./mlflow.db)")
    p.add_argument("--dry-run", action="store_true",
                   help="check the config, checkpoint, data and --output, print 'ok', and stop (no Ray, no MLflow run)")
    args = p.parse_args(argv)
    if args.output:
        check_output_file(args.output, "--output")

    from fewray.platform.config import load_config

    cfg = load_config(args.config, args.overrides)
    if args.dry_run:
        from fewray.platform.evaluate import prepare_evaluation

        prepare_evaluation(cfg, args.checkpoint, args.split)
        print(f"ok: {args.config} and {args.checkpoint} are ready for an evaluation (dry run, nothing started)")
        return 0
    from fewray.platform.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(cfg, args.checkpoint, args.split, args.num_workers, args.tracking_uri)
    print(result["line"], flush=True)
    finish(result, args.output)
    return 0


if __name__ == "__main__":
    run_cli(main)
