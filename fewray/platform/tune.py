"""Hyperparameter sweeps: Ray Tune (OptunaSearch + ASHA) over Ray Train meta-training runs, nested in MLflow.

The flow of :func:`run_sweep` (driver):

1. validate the config's ``tune:`` section (:class:`~fewray.platform.config.TuneSection`) and the data;
2. open one MLflow parent run for the sweep;
3. ``ray.tune.Tuner`` runs ``num_samples`` trials of :func:`trial_fn`; each trial applies its sampled values
   to the config, opens an MLflow child run (``mlflow.parentRunId`` = the sweep run) and fits a Ray Train
   ``TorchTrainer`` with the same training loop as ``pipelines/metatrain.py`` plus Tune's
   ``TuneReportCallback``, so every meta-validation (``accuracy_mean``, ``ci95``, ``step``) is a Tune result;
   OptunaSearch (TPE) proposes values, ASHA stops trials whose ``accuracy_mean`` falls behind at a rung;
4. after the sweep the driver completes every child run (best checkpoint, training curves, ``stopped_early``
   tag, status) - a trial stopped by ASHA is killed mid-training and cannot do it itself - and logs to the
   parent: the best trial's config as ``best_config.yaml`` (accepted by ``pipelines/metatrain.py``),
   ``sweep_summary.json`` / ``sweep_summary.md`` and ``plots/hparams_vs_metric.png``.

Example (the sweep itself starts Ray and trains every trial, so that line and its result are skipped when
the examples are tested)::

    >>> from fewray.platform.config import load_config
    >>> from fewray.platform.tune import run_sweep, search_space, trial_config
    >>> cfg = load_config("configs/classification/protonet_conv4_omniglot_tune.yaml")
    >>> sorted(search_space(cfg))       # the config keys each trial samples
    ['model.head.temperature', 'train.optimizer.lr']
    >>> trial = trial_config(cfg.to_dict(), {"train.optimizer.lr": 0.003, "model.head.temperature": 0.5})
    >>> trial.train.optimizer.lr, trial.model.head["temperature"], trial.tune   # a plain training config
    (0.003, 0.5, None)
    >>> summary = run_sweep(cfg, "runs/sweep")  # doctest: +SKIP
    >>> summary["best_config"]          # path of the exported YAML  # doctest: +SKIP
    '.../runs/sweep/best_config.yaml'
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow.tracking import MlflowClient

from fewray.platform.checkpoint import CHECKPOINT_FILE
from fewray.platform.config import ExperimentConfig, config_from_dict, flatten, set_by_path
from fewray.platform.cli import check_output_dir
from fewray.platform.errors import CheckpointError, ConfigError, FewrayError
from fewray.platform.plots import plot_hparams_vs_metric, plot_training_curves
from fewray.platform.preflight import check_image_size, check_resources
from fewray.platform.runtime import init_ray, verbose
from fewray.platform.tracking import (
    child_runs,
    log_dict_params,
    log_params_to,
    metric_history,
    replay_spool,
    setup_tracking,
    start_child_run,
)
from fewray.platform.base_classes import resolve_base_classes
from fewray.platform.train import SPOOL_FILE, best_checkpoint, check_training_data

log = logging.getLogger(__name__)
# CPUs reserved by a trial's Tune function itself: it only drives the TorchTrainer, whose workers reserve
# their own CPUs. Tune refuses a request of zero, so it is a sliver.
TRIAL_DRIVER_CPUS = 0.01
BEST_CONFIG_FILE = "best_config.yaml"
SUMMARY_FILE = "sweep_summary.json"
PG_FILE = "placement_group"


def search_space(cfg: ExperimentConfig) -> dict[str, Any]:
    """The Tune search space of ``cfg.tune``: ``{dotted config key: ray.tune domain}``.

    Raises:
        ConfigError: ``cfg`` has no ``tune:`` section.
    """
    from ray import tune

    if cfg.tune is None:
        raise ConfigError("the config has no 'tune:' section (search_space, metric, num_samples, ...)")
    space = {}
    for key, spec in cfg.tune.search_space.items():
        (name, args), = spec.items()
        space[key] = tune.choice(list(args)) if name == "choice" else getattr(tune, name)(*args)
    return space


def trial_config(base: dict[str, Any], params: dict[str, Any]) -> ExperimentConfig:
    """The experiment config of one trial: ``base`` (a config dict) with each dotted key of ``params`` set.

    The ``tune:`` section is dropped, so the result is a plain meta-training config.

    Raises:
        ConfigError: a value that does not validate.
    """
    raw = {k: v for k, v in base.items() if k != "tune"}
    for key, value in params.items():
        raw = set_by_path(raw, key, value.item() if hasattr(value, "item") else value)
    return config_from_dict(raw)


def apply_trial_resources(cfg: ExperimentConfig) -> dict[str, Any]:
    """``cfg`` as a dict with ``tune.resources_per_trial`` written into its ``train:`` section."""
    raw = cfg.to_dict()
    if cfg.tune is not None:
        for key, value in cfg.tune.resources_per_trial.model_dump().items():
            if value is not None:
                raw["train"][key] = value
    return raw


def num_reports(cfg: ExperimentConfig) -> int:
    """Meta-validations (Tune results) of a full trial: one every ``val_interval`` steps and one at the end."""
    t = cfg.train
    return t.num_steps // t.val_interval + (1 if t.num_steps % t.val_interval else 0)


def trial_fn(params: dict[str, Any], base: dict[str, Any], sweep_dir: str, tracking_uri: str,
             parent_run_id: str) -> None:
    """One Tune trial (runs in a Tune actor): a Ray Train meta-training run of the sampled config.

    Args:
        params: the sampled values, ``{dotted config key: value}``.
        base: the sweep's config dict (resources already applied); sweep_dir: the sweep's output directory;
            tracking_uri, parent_run_id: MLflow store and the sweep's parent run.

    Writes checkpoints to ``sweep_dir/trials/<trial_id>/metatrain/checkpoint_<step>`` and metrics to a new
    MLflow child run tagged ``fewray.trial_id``. Every meta-validation reaches Tune through
    ``TuneReportCallback`` (``accuracy_mean``, ``accuracy_std``, ``ci95``, ``step``, ``checkpoint_path``).
    """
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from fewray.platform.train import fit_training

    ctx = ray.tune.get_context()
    trial_id, trial_name = ctx.get_trial_id(), ctx.get_trial_name()
    cfg = resolve_base_classes(trial_config(base, params))
    cfg_dict = cfg.to_dict()
    run_id = start_child_run(tracking_uri, parent_run_id, trial_name,
                             {"fewray.kind": "trial", "fewray.trial_id": trial_id})
    client = MlflowClient(tracking_uri)
    log_params_to(client, run_id, {**flatten(cfg_dict), **{f"tune.{k}": v for k, v in params.items()}})
    client.log_text(run_id, yaml.safe_dump(cfg_dict, sort_keys=False), "config/config.yaml")
    out = Path(sweep_dir) / "trials" / trial_id
    out.mkdir(parents=True, exist_ok=True)
    fit_training(cfg, cfg_dict, out, tracking_uri, run_id, 0, None, callbacks=[TuneReportCallback()],
         extra_loop_cfg={"placement_group_file": str(out / PG_FILE)})


def release_trial_resources(trial_dir: str | Path) -> bool:
    """Remove the Ray Train placement group a trial left behind; True if one was removed.

    When ASHA stops a trial, Tune kills the trial's actor and with it the Train controller, before the
    controller can remove its workers' placement group; the group would hold the trial's CPUs until the
    next trial times out waiting for them. The rank-0 worker recorded the group's id in ``trial_dir``.
    """
    from ray import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group

    f = Path(trial_dir) / PG_FILE
    if not f.is_file():
        return False
    pg = PlacementGroup(PlacementGroupID(bytes.fromhex(f.read_text().strip())))
    try:
        if placement_group_table(pg).get("state") in (None, "REMOVED"):
            return False
        remove_placement_group(pg)
    except Exception as exc:  # noqa: BLE001 - already gone, or the GCS raced us
        log.debug("placement group of %s not removed: %s", trial_dir, exc)
        return False
    return True


class SweepProgress:
    """Tune callback factory: a tqdm bar of finished trials on a terminal, one line per trial otherwise.

    When a trial ends it also releases the trial's Ray Train placement group (:func:`release_trial_resources`).

    Args:
        total (int): trials in the sweep; metric, mode: what "best" means; tty (bool): draw a bar;
        sweep_dir: the sweep's output directory (trials under ``trials/<trial_id>``).
    """

    def __new__(cls, total: int, metric: str, mode: str, tty: bool, sweep_dir: str | Path | None = None):  # noqa: D102
        from ray.tune import Callback
        from tqdm import tqdm

        class _Progress(Callback):
            def __init__(self) -> None:
                self.bar = tqdm(total=total, unit="trial", desc="sweep", disable=not tty)
                self.best: float | None = None
                self.done = 0

            def on_trial_result(self, iteration, trials, trial, result, **info):
                value = result.get(metric)
                if value is not None and (self.best is None or (value > self.best) == (mode == "max")):
                    self.best = float(value)
                    self.bar.set_postfix({f"best {metric}": f"{self.best:.2f}"})

            def _finish(self, trial, how: str) -> None:
                if sweep_dir is not None:
                    release_trial_resources(Path(sweep_dir) / "trials" / trial.trial_id)
                self.done += 1
                self.bar.update(1)
                if not tty:
                    last = trial.last_result or {}
                    value = last.get(metric)
                    shown = f"{value:.2f}" if isinstance(value, (int, float)) else "-"
                    print(f"sweep: trial {self.done}/{total} {trial.trial_id} {how} at step {last.get('step', '-')}: "
                          f"{metric} {shown}", file=sys.stderr, flush=True)

            def on_trial_complete(self, iteration, trials, trial, **info):
                self._finish(trial, "done")

            def on_trial_error(self, iteration, trials, trial, **info):
                self._finish(trial, f"failed ({error_line(getattr(trial, 'error_msg', None) or '')})")

            def on_experiment_end(self, trials, **info):
                self.bar.close()

        return _Progress()


def _finalize_trial(client: MlflowClient, uri: str, run_id: str | None, record: dict[str, Any]) -> None:
    """Complete a trial's child run: best metrics, best checkpoint, training curves, tags, status."""
    if run_id is None:
        return
    spool = Path(record["trial_dir"]) / SPOOL_FILE
    try:
        replay_spool(uri, spool)  # metrics the trial's logger could not send before it ended
    except Exception as exc:  # noqa: BLE001 - keep the file, finish the rest of the run
        log.warning("could not replay %s: %s", spool, exc)
    if record["best_value"] is not None:
        client.log_metric(run_id, "best_val_accuracy_mean", record["best_value"])  # tune.metric's (the name stays)
        client.log_metric(run_id, f"best_val_{record['metric']}", record["best_value"])
        if record["best_ci95"] is not None:
            client.log_metric(run_id, "best_val_ci95", record["best_ci95"])
        client.log_metric(run_id, "best_step", record["best_step"])
    client.set_tag(run_id, "fewray.stopped_early", str(record["stopped_early"]).lower())
    ckpt = record.get("best_checkpoint")
    if ckpt and Path(ckpt).is_file():
        client.log_artifact(run_id, ckpt, "checkpoint")
    history = metric_history(client, run_id, ["loss", "accuracy", "val_accuracy_mean"])
    with tempfile.TemporaryDirectory() as d:
        png = plot_training_curves(history, Path(d) / "training_curves.png")
        client.log_artifact(run_id, str(png), "plots")
        Path(d, "trial_result.json").write_text(json.dumps(record, indent=2, default=str))
        client.log_artifact(run_id, str(Path(d, "trial_result.json")))
    client.set_terminated(run_id, "FAILED" if record["status"] == "error" else "FINISHED")


def _summary_markdown(summary: dict[str, Any]) -> str:
    keys = summary["search_keys"]
    lines = [f"Sweep {summary['name']}: {summary['num_trials']} trials, {summary['num_stopped_early']} stopped early "
             f"by ASHA, {summary['sweep_seconds']:.0f} s. Metric: validation {summary['metric']} ({summary['mode']}).",
             "", "| trial | " + " | ".join(keys) + f" | best val {summary['metric']} | ci95 | best step | last step | status |",
             "|---|" + "---|" * (len(keys) + 5)]
    for t in summary["trials"]:
        vals = " | ".join(f"{t['params'].get(k):.4g}" if isinstance(t["params"].get(k), float) else str(t["params"].get(k))
                          for k in keys)
        acc = "-" if t["best_value"] is None else f"{t['best_value']:.2f}"
        ci = "-" if t["best_ci95"] is None else f"{t['best_ci95']:.2f}"
        status = "stopped early" if t["stopped_early"] else t["status"]
        mark = " (best)" if t["trial_id"] == summary["best_trial_id"] else ""
        lines.append(f"| {t['trial_id']}{mark} | {vals} | {acc} | {ci} | {t['best_step']} | {t['last_step']} | {status} |")
    return "\n".join(lines) + "\n"


def prepare_sweep(cfg: ExperimentConfig, output_dir: Path) -> tuple[dict[str, Any], dict[str, Any], int]:
    """Every check of a sweep that needs neither Ray nor MLflow: the ``tune:`` section, ASHA's grace period,
    the trial resources, the output directory, the data and the catalog's image size.

    Returns:
        ``(space, base, reports)``: the Tune search space, the trial config dict (resources applied) and the
        meta-validations a full trial reports.

    Raises:
        ConfigError, DataError, OutputPathError: naming the key or path.
    """
    space = search_space(cfg)
    tc = cfg.tune
    reports = num_reports(cfg)
    if tc.scheduler.type == "asha" and tc.scheduler.grace_period >= reports:
        raise ConfigError(f"tune.scheduler.grace_period={tc.scheduler.grace_period} leaves ASHA nothing to stop: a "
                          f"trial reports {reports} meta-validations (train.num_steps / train.val_interval)")
    base = apply_trial_resources(cfg)
    config_from_dict({k: v for k, v in base.items() if k != "tune"})  # the resources validate
    check_output_dir(output_dir)
    check_training_data(cfg)
    check_image_size(cfg)
    return space, base, reports


def run_sweep(cfg: ExperimentConfig, output_dir: str | Path, tracking_uri: str | None = None,
              progress: bool = False) -> dict[str, Any]:
    """Run the sweep of ``cfg.tune`` with Ray Tune and log it to MLflow as a parent run with nested trials.

    Args:
        cfg: a validated config with a ``tune:`` section.
        output_dir: sweep directory: ``trials/<trial_id>/`` (Ray Train checkpoints), ``tune/`` (Tune's state),
            ``best_config.yaml`` and ``sweep_summary.json``.
        tracking_uri: MLflow tracking URI (overrides ``cfg.tracking.tracking_uri``).
        progress: draw a tqdm bar of finished trials (pass ``sys.stderr.isatty()``); otherwise one line per trial.

    Returns:
        The sweep summary (also ``sweep_summary.json``): ``parent_run_id``, ``best_trial_id``, ``best_run_id``,
        ``best_params``, ``best_value`` (the best ``tune.metric``; also under its first name ``best_accuracy_mean``),
        ``best_ci95`` (None for a metric without one, e.g. ``mAP``), ``best_step``, ``best_checkpoint``,
        ``best_config`` (path), ``num_trials``, ``num_stopped_early``, ``sweep_seconds``, ``trials`` (one record
        per trial), ``tracking_uri``.

    Raises:
        ConfigError: no ``tune:`` section, or ASHA's grace period leaves nothing to stop;
        DataError, TrackingError: bad data or unreachable tracking server, before any trial starts;
        ResourceError: a trial needs more CPUs/GPUs than the cluster has;
        SweepFailed: every trial failed (one line: the first trial's error and where its files are).
    """
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    output_dir = Path(output_dir).resolve()
    space, base, reports = prepare_sweep(cfg, output_dir)
    tc = cfg.tune
    init_ray()
    trial = base["train"]
    check_resources(trial["num_workers"], trial["cpus_per_worker"], trial["use_gpu"], "each sweep trial",
                    "tune.resources_per_trial", wait_s=trial["resource_wait_s"])
    output_dir.mkdir(parents=True, exist_ok=True)
    uri = setup_tracking(tracking_uri or cfg.tracking.tracking_uri, cfg.tracking.experiment)

    if tc.search_alg == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        searcher = OptunaSearch(sampler=optuna.samplers.TPESampler(seed=tc.seed, n_startup_trials=tc.n_startup_trials))
    else:
        searcher = BasicVariantGenerator(random_state=tc.seed)
    if tc.scheduler.type == "asha":
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=reports, grace_period=tc.scheduler.grace_period,
                                  reduction_factor=tc.scheduler.reduction_factor)
    else:
        scheduler = FIFOScheduler()

    t0 = time.perf_counter()
    with mlflow.start_run(run_name=f"{cfg.name}-sweep") as parent:
        parent_id = parent.info.run_id
        mlflow.set_tag("fewray.kind", "sweep")
        log_dict_params({**flatten({k: v for k, v in base.items() if k != "tune"}),
                         **{f"tune.{k}": v for k, v in flatten(tc.model_dump(mode="json")).items()}})
        mlflow.log_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), "config/sweep_config.yaml")
        trainable = tune.with_parameters(trial_fn, base=base, sweep_dir=str(output_dir), tracking_uri=uri,
                                          parent_run_id=parent_id)
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": TRIAL_DRIVER_CPUS}),
            param_space=space,
            tune_config=tune.TuneConfig(metric=tc.metric, mode=tc.mode, num_samples=tc.num_samples,
                                        max_concurrent_trials=tc.max_concurrent_trials, search_alg=searcher,
                                        scheduler=scheduler),
            run_config=tune.RunConfig(name="tune", storage_path=str(output_dir), verbose=0,
                                      callbacks=[SweepProgress(tc.num_samples, tc.metric, tc.mode, progress, output_dir)]),
        )
        tune_log = logging.getLogger("ray.tune")
        level = tune_log.level
        if not verbose():  # a failed trial is one line of SweepProgress, not Tune's traceback
            tune_log.setLevel(logging.CRITICAL)
        try:
            grid = tuner.fit()
        finally:
            tune_log.setLevel(level)
        seconds = time.perf_counter() - t0

        client = MlflowClient(uri)
        runs_by_trial = {r.data.tags.get("fewray.trial_id"): r.info.run_id for r in child_runs(client, parent_id)}
        records = [_trial_record(res, cfg, tc.metric, tc.mode, runs_by_trial, output_dir) for res in grid]
        for r in records:
            release_trial_resources(r["trial_dir"])
        scored = [r for r in records if r["best_value"] is not None]
        if not scored:
            errors = "; ".join(str(r["error"])[:200] for r in records if r["error"])
            mlflow.set_tag("fewray.error", errors[:5000])
            raise SweepFailed(_all_failed_message(records, output_dir))
        sign = 1 if tc.mode == "max" else -1
        best = max(scored, key=lambda r: (sign * r["best_value"], r["last_step"]))
        for r in records:
            r["best"] = r is best
            _finalize_trial(client, uri, r["run_id"], r)

        best_cfg = trial_config(base, best["params"]).to_dict()
        best_cfg["name"] = f"{cfg.name}-best"
        best_path = output_dir / BEST_CONFIG_FILE
        ci = "" if best["best_ci95"] is None else f" ± {best['best_ci95']:.2f}"
        header = (f"# Best trial {best['trial_id']} of sweep run {parent_id}: val {tc.metric} "
                  f"{best['best_value']:.2f}{ci} at step {best['best_step']}.\n"
                  f"# Values found: {json.dumps(best['params'])}\n")
        best_path.write_text(header + yaml.safe_dump(best_cfg, sort_keys=False))
        summary = {
            "name": cfg.name,
            "parent_run_id": parent_id,
            "metric": tc.metric,
            "mode": tc.mode,
            "search_keys": list(tc.search_space),
            "best_trial_id": best["trial_id"],
            "best_run_id": best["run_id"],
            "best_params": best["params"],
            "best_value": best["best_value"],
            "best_accuracy_mean": best["best_value"],  # tune.metric's value under its first name (kept)
            "best_ci95": best["best_ci95"],
            "best_step": best["best_step"],
            "best_checkpoint": best["best_checkpoint"],
            "best_config": str(best_path),
            "num_trials": len(records),
            "num_stopped_early": sum(r["stopped_early"] for r in records),
            "num_errors": sum(r["status"] == "error" for r in records),
            "max_reports": reports,
            "sweep_seconds": round(seconds, 1),
            "tracking_uri": uri,
            "trials": records,
        }
        (output_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=str) + "\n")
        mlflow.log_artifact(str(best_path))
        mlflow.log_artifact(str(output_dir / SUMMARY_FILE))
        mlflow.log_text(_summary_markdown(summary), "sweep_summary.md")
        mlflow.log_metrics({"best_val_accuracy_mean": best["best_value"], f"best_val_{tc.metric}": best["best_value"],
                            **({"best_val_ci95": best["best_ci95"]} if best["best_ci95"] is not None else {}),
                            "num_trials": len(records), "num_stopped_early": summary["num_stopped_early"],
                            "sweep_seconds": seconds})
        mlflow.set_tags({"fewray.best_trial_id": best["trial_id"], "fewray.best_run_id": str(best["run_id"])})
        log_keys = [k for k, s in tc.search_space.items() if any("log" in name for name in s)]
        with tempfile.TemporaryDirectory() as d:
            png = plot_hparams_vs_metric(
                [{"params": r["params"], "metric": r["best_value"], "stopped_early": r["stopped_early"],
                  "best": r["best"]} for r in records],
                list(tc.search_space), f"val {tc.metric}{' (%)' if tc.metric in PERCENT_METRICS else ''}",
                Path(d) / "hparams_vs_metric.png", log_keys)
            mlflow.log_artifact(str(png), "plots")
    return summary


#: few-shot accuracy's metrics, in percent (their plot axes say so)
PERCENT_METRICS = ("accuracy_mean", "accuracy_std", "ci95")


class SweepFailed(FewrayError):
    """No trial of a sweep reported a meta-validation (every one failed)."""


def error_line(text: str) -> str:
    """The line of a (remote) traceback that says what went wrong: its last line that is not code or a marker."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return next((ln for ln in reversed(lines) if not ln.startswith(("File ", "^", "~"))), lines[-1] if lines else "")


def _all_failed_message(records: list[dict[str, Any]], output_dir: Path) -> str:
    """One line: how many trials failed, the first trial's error (its last line, the exception itself) and
    where that trial's files and Tune's logs are."""
    first = next((r for r in records if r["error"]), records[0] if records else None)
    if first is None:
        return f"the sweep ran no trial (Tune's logs: {output_dir / 'tune'})"
    cause = error_line(str(first["error"] or "no result reported"))
    return (f"every trial of the sweep failed ({len(records)} of {len(records)}); the first, {first['trial_id']}: "
            f"{cause[:300]} (trial files: {first['trial_dir']}; Tune's logs: {output_dir / 'tune'})")


def _trial_record(res: Any, cfg: ExperimentConfig, metric: str, mode: str, runs_by_trial: dict,
                  sweep_dir: Path) -> dict[str, Any]:
    """One trial of a Tune ``Result``: sampled params, best meta-validation, last step, early stop, checkpoint."""
    df = res.metrics_dataframe
    metrics = res.metrics or {}
    trial_id = metrics.get("trial_id") or Path(res.path).name
    params = {k: (v.item() if hasattr(v, "item") else v) for k, v in (res.config or {}).items()}
    rec: dict[str, Any] = {"trial_id": trial_id, "run_id": runs_by_trial.get(trial_id), "params": params,
                           "trial_dir": str(sweep_dir / "trials" / trial_id),
                           "metric": metric, "best_value": None, "best_accuracy_mean": None, "best_ci95": None,
                           "best_step": None, "last_step": 0,
                           "reports": 0, "best_checkpoint": None, "stopped_early": False,
                           "status": "error" if res.error else "ok", "error": str(res.error) if res.error else None}
    if df is not None and len(df) and metric in df:
        df = df.dropna(subset=[metric])
        i = df[metric].idxmax() if mode == "max" else df[metric].idxmin()
        row = df.loc[i]
        ckpt = row.get("checkpoint_path")
        ci95 = row.get("ci95")  # only few-shot accuracy has one
        rec.update(best_value=float(row[metric]), best_accuracy_mean=float(row[metric]),
                   best_ci95=None if ci95 is None or ci95 != ci95 else float(ci95), best_step=int(row["step"]),
                   last_step=int(df["step"].max()), reports=int(len(df)),
                   best_checkpoint=str(Path(ckpt) / CHECKPOINT_FILE) if isinstance(ckpt, str) else None)
        rec["stopped_early"] = not res.error and rec["last_step"] < cfg.train.num_steps
        if not (rec["best_checkpoint"] and Path(rec["best_checkpoint"]).is_file()):
            try:  # e.g. Ray kept another checkpoint of the same accuracy
                best_dir, _ = best_checkpoint(rec["trial_dir"], metric, mode)
                rec["best_checkpoint"] = str(best_dir / CHECKPOINT_FILE)
            except CheckpointError:
                rec["best_checkpoint"] = None
    return rec
