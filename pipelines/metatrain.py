"""Meta-train a few-shot classifier with Ray Train; prints the best checkpoint's path.

Usage::

    python pipelines/metatrain.py --config configs/classification/protonet_conv4_omniglot.yaml \
        [--set train.num_steps=1000 ...] [--output-dir runs/protonet] [--tracking-uri URI] [--register-model NAME]

Writes ``OUTPUT_DIR/train_result.json``; re-running with the same ``--output-dir`` resumes
from the latest checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys

import _bootstrap  # noqa: F401

from fewray.platform.errors import run_cli


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="experiment YAML")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. train.num_steps=100 (repeatable)")
    p.add_argument("--output-dir", default=None, help="checkpoints and train_result.json (default runs/<name>)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default MLFLOW_TRACKING_URI or ./mlflow.db)")
    p.add_argument("--register-model", default=None, metavar="NAME",
                   help="log the best checkpoint's model (mlflow.pytorch state dict) to the run and register it as "
                        "a new version of NAME in the MLflow Model Registry (meta-test it as models:/NAME/VERSION)")
    p.add_argument("--dry-run", action="store_true",
                   help="check the config, data and output directory, print 'ok', and stop (no Ray, no MLflow run)")
    args = p.parse_args(argv)

    from fewray.platform.config import load_config

    cfg = load_config(args.config, args.overrides)  # a bad config fails here, before Ray and MLflow are imported
    out = args.output_dir or f"runs/{cfg.name}"
    if args.register_model is not None:
        from fewray.platform.model_registry import check_model_name

        check_model_name(args.register_model)  # before hours of training
    if args.dry_run:
        from pathlib import Path

        from fewray.platform.train import prepare_metatrain

        *_, latest, step = prepare_metatrain(cfg, Path(out).resolve())
        where = f"resumes from step {step}" if latest else "starts from step 0"
        print(f"ok: {args.config} is ready to train into {out}, {where} (dry run, nothing started)")
        return 0
    from fewray.platform.train import run_metatrain

    result = run_metatrain(cfg, out, args.tracking_uri)
    if args.register_model is not None:
        from fewray.platform.model_registry import register_checkpoint

        registered = register_checkpoint(result["best_checkpoint"], args.register_model, result["mlflow_run_id"],
                                         result["tracking_uri"])
        print(json.dumps({**result, "registered_model": registered}, indent=2))
    else:
        print(json.dumps(result, indent=2))
    from fewray.platform.tracking import run_ui_line

    print(run_ui_line(result["tracking_uri"], result["mlflow_experiment_id"], result["mlflow_run_id"]), file=sys.stderr)
    print(result["best_checkpoint"])
    return 0


if __name__ == "__main__":
    run_cli(main)
