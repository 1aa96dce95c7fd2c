"""Sweep hyperparameters with Ray Tune (OptunaSearch + ASHA early stopping); every trial is a Ray Train run.

Usage::

    python pipelines/tune.py --config configs/classification/protonet_conv4_omniglot_tune.yaml \
        [--set tune.num_samples=8 ...] [--output-dir runs/protonet_conv4_omniglot_tune] [--tracking-uri URI]

The config's ``tune:`` section gives the search space, the metric (meta-validation ``accuracy_mean``), the
number of trials, ASHA's settings and the resources per trial. MLflow gets one parent run for the sweep and a
nested child run per trial. Writes ``OUTPUT_DIR/best_config.yaml`` (re-train it with
``pipelines/metatrain.py --config OUTPUT_DIR/best_config.yaml``) and ``OUTPUT_DIR/sweep_summary.json``;
prints the summary JSON and, last, the path of the best config.
"""

from __future__ import annotations

import argparse
import json
import sys

import _bootstrap  # noqa: F401

from fewray.platform.errors import run_cli


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="experiment YAML with a tune: section")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. tune.num_samples=4 (repeatable)")
    p.add_argument("--output-dir", default=None, help="trial checkpoints, best_config.yaml (default runs/<name>)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default MLFLOW_TRACKING_URI or ./mlflow.db)")
    p.add_argument("--dry-run", action="store_true",
                   help="check the config, search space, data and output directory, print 'ok', and stop")
    args = p.parse_args(argv)

    from fewray.platform.config import load_config

    cfg = load_config(args.config, args.overrides)  # a bad config fails here, before Ray and MLflow are imported
    out = args.output_dir or f"runs/{cfg.name}"
    if args.dry_run:
        from pathlib import Path

        from fewray.platform.tune import prepare_sweep

        prepare_sweep(cfg, Path(out).resolve())
        print(f"ok: {args.config} is ready for a sweep into {out} (dry run, nothing started)")
        return 0
    from fewray.platform.tune import run_sweep

    summary = run_sweep(cfg, out, args.tracking_uri, progress=sys.stderr.isatty())
    brief = {k: v for k, v in summary.items() if k != "trials"}
    print(json.dumps(brief, indent=2, default=str))
    print(summary["best_config"])
    return 0


if __name__ == "__main__":
    run_cli(main)
