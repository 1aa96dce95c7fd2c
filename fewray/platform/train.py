"""(Meta-)training with Ray Train (DDP) fed by a Ray Data stream of episodes or labelled batches.

:func:`run_metatrain` (driver) checks the data, opens an MLflow run, builds the stream and fits a
``TorchTrainer``; :func:`train_loop_per_worker` (each DDP rank) trains on its shard, logs metrics
to MLflow (rank 0), validates every ``train.val_interval`` steps with its task's validator
(``task.validator(cfg)``; few-shot: mmfewshot's MetaTestEvalHook, :class:`~fewray.platform.validation.MetaValidator`)
and reports a checkpoint
(model, optimizer, scheduler, step, config). Ray keeps the best checkpoints by
``val.metric`` (default ``accuracy_mean``) plus the latest; a restarted worker or a re-run with the same
``output_dir`` resumes from the latest checkpoint.

Episodic models (ProtoNet, MatchingNet, RelationNet, MAML, MetaBaseline) get one episode per step:
``model(mode='train', support_img, support_label, query_img, query_label)``. Fine-tune models
(``train_on_batches``: Baseline, Baseline++, NegMargin) are pre-trained on all base classes with
shuffled labelled batches of ``train.batch_size``: ``model(mode='train', img, gt_label)``; their head's
``num_classes`` defaults to the train split's class count (:func:`resolve_base_classes`). Both are
meta-validated the same way. Other tasks (self-supervised, multi-label) stream their own batches
(:mod:`fewray.tasks`); the multi-label task validates by mAP on the ``val`` split's images.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from fewray.algorithms import build_classifier
from fewray.algorithms.builder import HOOKS, init_file_args
from fewray.platform.base_classes import resolve_base_classes
from fewray.platform.checkpoint import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from fewray.platform.config import ExperimentConfig, config_from_dict, flatten
from fewray.platform.cli import check_output_dir
from fewray.data.catalog import read_catalog_info, read_labels
from fewray.data.episodes import torch_seed
from fewray.platform.errors import CheckpointError, Interrupted
from fewray.platform.features import channels_last
from fewray.platform.preflight import (check_image_size, check_resources, check_same_identity, fingerprint,
                                       identity)
from fewray.platform.runtime import init_ray
from fewray.platform.validation import MetaValidator  # noqa: F401  (re-exported: its home before the task hook)
from fewray.tasks import task_for
# MLflow, matplotlib and YAML are imported where they are used: every Ray Train worker imports this module
# (train_loop_per_worker), and only the driver and rank 0 need them (mlflow alone costs seconds to import).

log = logging.getLogger(__name__)
RUN_NAME = "metatrain"
METRICS_FILE = "metrics.json"
SPOOL_FILE = "unsent_metrics.jsonl"
_CKPT_DIR = re.compile(r"^checkpoint_(\d+)$")


def make_optimizer(model: torch.nn.Module, cfg: ExperimentConfig) -> tuple[torch.optim.Optimizer, Any]:
    """The optimizer and step-decay scheduler of ``cfg.train`` (one parameter group per ``optimizer.lr_mult``
    multiplier when it is set: a parameter takes the multiplier of the longest key its name contains), with the
    linear warm-up of ``lr_schedule.warmup_steps`` when set (chained with the decay)."""
    o = cfg.train.optimizer
    params: Any = [p for p in model.parameters() if p.requires_grad]
    if o.lr_mult:
        keys = sorted(o.lr_mult, key=len, reverse=True)
        groups: dict[float, list] = {}
        for name, p in model.named_parameters():
            if p.requires_grad:
                groups.setdefault(next((o.lr_mult[k] for k in keys if k in name), 1.0), []).append(p)
        params = [{"params": ps, "lr": o.lr * mult} for mult, ps in groups.items()]
    if o.type == "SGD":
        opt = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    else:
        opt = getattr(torch.optim, o.type)(params, lr=o.lr, weight_decay=o.weight_decay)
    s = cfg.train.lr_schedule
    if not s.warmup_steps and not s.milestones:
        return opt, torch.optim.lr_scheduler.StepLR(opt, s.step_size, s.gamma)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, s))


def lr_factor(step: int, s) -> float:
    """The learning-rate multiplier at ``step`` of a warm-up / milestone schedule (``train.lr_schedule``): the
    linear warm-up's fraction times ``gamma`` to the number of decays passed.

    Example::

        >>> from fewray.platform.config import LrScheduleConfig
        >>> s = LrScheduleConfig(milestones=[6], gamma=0.1, warmup_steps=4, warmup_ratio=0.001)
        >>> [round(lr_factor(i, s), 4) for i in (0, 2, 4, 5, 6, 8)]
        [0.001, 0.5005, 1.0, 1.0, 0.1, 0.1]
    """
    warm = s.warmup_ratio + (1 - s.warmup_ratio) * min(1.0, step / s.warmup_steps) if s.warmup_steps else 1.0
    decays = sum(step >= m for m in s.milestones) if s.milestones else step // s.step_size
    return warm * s.gamma ** decays


def sum_losses(out: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
    """A model's training output (torchvision's convention: a dict of losses) -> ``(total, logged scalars)``.

    Every entry whose key starts with ``loss`` is a loss: their sum is the step's objective and each is logged
    (``loss``, or ``loss_classifier``, ``loss_box_reg``, ... for detectors), plus ``loss`` as the total when
    there are several. Other scalar entries are logged as they are, except ``accuracy``, which the heads give
    as a fraction and the logs hold in percent (``accuracy``, 0-100).

    Raises:
        ValueError: the dict holds no loss.

    Example::

        >>> total, logged = sum_losses({"loss_a": torch.tensor(1.0), "loss_b": torch.tensor(2.0),
        ...                             "accuracy": torch.tensor(0.5)})
        >>> float(total), logged
        (3.0, {'loss_a': 1.0, 'loss_b': 2.0, 'accuracy': 50.0, 'loss': 3.0})
    """
    losses = {k: v for k, v in out.items() if k.startswith("loss")}
    if not losses:
        raise ValueError(f"the model's training output has no loss (keys: {', '.join(out)})")
    total = sum(losses.values())
    logged: dict[str, float] = {}
    for key, value in out.items():
        if key.startswith("loss") or (torch.is_tensor(value) and value.numel() == 1) or isinstance(value, (int, float)):
            logged[key] = float(value.detach() if torch.is_tensor(value) else value) * (100.0 if key == "accuracy" else 1.0)
    logged["loss"] = float(total.detach())
    return total, logged


def _restore(model: torch.nn.Module, optimizer, scheduler, cfg: ExperimentConfig,
             loop_cfg: dict[str, Any]) -> tuple[int, bool]:
    """Load the state training continues from; ``(step, restored by Ray after a worker restart)``.

    Ray's checkpoint after a worker restart counts only if it is newer than where this fit's stream starts
    (after a re-run with the same output dir Ray may hand back an older one of the interrupted run); else the
    latest checkpoint of an earlier run (``resume_from``); else a fresh start, with the model's training-start
    hook (``before_train``, e.g. ArcFace's adaptive margins from the class counts) when it has one.
    """
    start_step = int(loop_cfg["start_step"])
    state, restored = None, False
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = load_checkpoint(d)
        restored = int(state["step"]) > start_step
        if int(state["step"]) < start_step:
            state = None
    if state is None and loop_cfg.get("resume_from"):
        state = load_checkpoint(loop_cfg["resume_from"])
    if state is None:
        if hasattr(model, "before_train"):
            model.before_train(class_counts=np.bincount(read_labels(cfg.data.root, "train")))
        return 0, False
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return int(state["step"]), restored


class _LossMeter:
    """Running means of the step's scalars (every loss of the dict, ``accuracy``, ...) between two log lines, and
    the task's throughput (steps of all workers per second)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.seen, self.t0 = 0, time.perf_counter()
        self.last_loss = float("nan")

    def add(self, scalars: dict[str, float]) -> None:
        self.seen += 1
        for key, value in scalars.items():
            self.sums[key] = self.sums.get(key, 0.0) + value

    def flush(self, per_step: int, rate_name: str, lr: float) -> dict[str, float]:
        """The means since the last flush, ``lr`` and the rate (``per_step`` items of all workers per step); starts a
        new window."""
        out = {**{k: v / self.seen for k, v in self.sums.items()}, "lr": lr,
               rate_name: self.seen * per_step / (time.perf_counter() - self.t0)}
        self.last_loss = self.sums.get("loss", 0.0) / max(self.seen, 1)
        self.sums, self.seen, self.t0 = {}, 0, time.perf_counter()
        return out


def _validate_and_report(step: int, core, optimizer, scheduler, validator, task, logger, loop_cfg,
                         last_loss: float) -> None:
    """Rank 0: validate, log, print the progress line, and report a checkpoint to Ray Train (which keeps the best by
    ``val.metric``); other ranks report the step only."""
    metrics: dict[str, Any] = {"step": step}
    if validator is None:
        ray.train.report(metrics, checkpoint=None)
        return
    val = validator(task.eval_model(core), ray.train.torch.get_device())
    metrics.update(val)
    if logger:
        logger.log({f"val_{k}": v for k, v in val.items()}, step)
        logger.flush()
    # progress in the terminal (fewray's log lines reach the driver; Ray's own stay in its logs)
    cfg_steps = loop_cfg["config"]["train"]["num_steps"]
    log.info("step %d/%d: training loss %.4f, %s", step, cfg_steps, last_loss, task.val_line(val))
    with tempfile.TemporaryDirectory() as d:
        save_checkpoint(d, model=core.state_dict(), optimizer=optimizer.state_dict(),
                        scheduler=scheduler.state_dict(), step=step, config=loop_cfg["config"],
                        identity=loop_cfg.get("identity", {}), metrics=val)
        Path(d, METRICS_FILE).write_text(json.dumps({**val, "step": step}))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d),
                         checkpoint_dir_name=f"checkpoint_{step:07d}")


def step_seed(seed: int, rank: int, step: int) -> int:
    """The torch seed of training step ``step`` on DDP rank ``rank`` of a run seeded ``seed``.

    The random draws of a step (torchvision's RPN and RoI box samplers, dropout, ...) depend on
    ``(seed, rank, step)`` only, as its data does on ``(seed, step)``: a training resumed from a checkpoint
    (a re-run, a chunked schedule, a Ray Train worker restart) continues exactly as an uninterrupted one.

    Example:
        >>> step_seed(0, 0, 5) == step_seed(0, 0, 5) != step_seed(0, 1, 5)
        True
    """
    return torch_seed(seed, rank, step)


def train_loop_per_worker(loop_cfg: dict[str, Any]) -> None:
    """One Ray Train worker: resume, train on its shard of the task's stream, validate and checkpoint.

    Args:
        loop_cfg: ``{"config": dict, "tracking_uri": str | None, "run_id": str | None, "start_step": int,
            "resume_from": checkpoint directory of an earlier run or None,
            "spool_path": where rank 0 writes metrics MLflow could not take by the end, or None}``;
            optional ``placement_group_file``: rank 0 writes the hex id of the workers' placement group there
            (sweep trials, see :func:`fewray.platform.tune.release_trial_resources`).
    """
    cfg = config_from_dict(loop_cfg["config"])
    tc = cfg.train
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    torch.set_num_threads(tc.torch_threads or tc.cpus_per_worker)
    torch.manual_seed(cfg.seed * 1000 + rank)
    device = ray.train.torch.get_device()

    model = channels_last(build_classifier(cfg.model))
    optimizer, scheduler = make_optimizer(model, cfg)
    step, restored = _restore(model, optimizer, scheduler, cfg, loop_cfg)
    model = ray.train.torch.prepare_model(model)
    core = model.module if hasattr(model, "module") else model

    if rank == 0 and loop_cfg.get("placement_group_file"):
        # A sweep trial stopped by Tune dies with its Train controller; the driver removes the workers'
        # placement group by this id (Ray Train's own cleaner needs the state API, i.e. a dashboard).
        pg = ray.util.get_current_placement_group()
        if pg is not None:
            Path(loop_cfg["placement_group_file"]).write_text(pg.id.hex())
    task = task_for(cfg)
    validator = task.validator(cfg) if rank == 0 else None
    logger = None
    if rank == 0 and loop_cfg.get("run_id"):
        from fewray.platform.tracking import MetricLogger

        logger = MetricLogger(loop_cfg["tracking_uri"], loop_cfg["run_id"], spool_path=loop_cfg.get("spool_path"))
        if restored:  # a worker restart (FailureConfig): record where training picked up again
            logger.log({"restored_from_step": step}, step)
            log.warning("Ray Train worker restarted: resuming from the checkpoint of step %d", step)
    hooks = [HOOKS.build(h, "train.hooks") for h in tc.hooks]
    # A restarted worker sees its shard from the start: skip what was trained before the restart.
    skip = step - int(loop_cfg["start_step"])
    meter = _LossMeter()
    for batch in ray.train.get_dataset_shard("train").iter_torch_batches(batch_size=1, prefetch_batches=4,
                                                                         device=device):
        if skip > 0:
            skip -= 1
            continue
        if step >= tc.num_steps:
            break
        for hook in hooks:
            hook.before_train_iter(core, step)
        torch.manual_seed(step_seed(cfg.seed, rank, step))
        total, scalars = sum_losses(model(mode="train", **task.model_inputs(batch)))
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        scheduler.step()
        step += 1
        meter.add(scalars)
        if step % tc.log_interval == 0:
            means = meter.flush(task.items_per_step(cfg), task.rate_name, scheduler.get_last_lr()[0])
            # what training has seen so far (e.g. episodes_seen: steps x meta-batch), an x-axis for the curves
            means[task.rate_name.replace("_per_second", "_seen")] = step * task.items_per_step(cfg)
            if logger:
                logger.log(means, step)
                logger.flush()
        if step % tc.val_interval == 0 or step == tc.num_steps:
            _validate_and_report(step, core, optimizer, scheduler, validator, task, logger, loop_cfg,
                                 meter.last_loss)
        if step >= tc.num_steps:
            break
    if logger:
        logger.close()


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, directory)`` of every complete ``checkpoint_<step>`` of a training output dir, by step."""
    run_dir = Path(output_dir) / RUN_NAME
    found = []
    if run_dir.is_dir():
        for p in run_dir.iterdir():
            m = _CKPT_DIR.match(p.name)
            if m and (p / CHECKPOINT_FILE).is_file():
                found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(output_dir: str | Path) -> tuple[Path | None, int]:
    """The newest readable checkpoint directory of a training output dir and its step (or ``(None, 0)``).

    A checkpoint cut short (the process copying it was killed) is skipped with a warning, so a resume
    starts from the newest complete one.
    """
    for step, directory in reversed(list_checkpoints(output_dir)):
        try:
            load_checkpoint(directory)
        except CheckpointError as exc:
            log.warning("skipping an unreadable checkpoint: %s", exc)
            continue
        return directory, step
    return None, 0


def checkpoint_metrics(directory: Path) -> dict[str, float]:
    """Meta-validation metrics stored with a checkpoint (``metrics.json``, else inside ``checkpoint.pt``)."""
    side = directory / METRICS_FILE
    if side.is_file():
        return json.loads(side.read_text())
    state = load_checkpoint(directory)
    return {**state.get("metrics", {}), "step": int(state["step"])}


def best_checkpoint(output_dir: str | Path, metric: str = "accuracy_mean", mode: str = "max") -> tuple[Path, dict[str, float]]:
    """The kept checkpoint with the best meta-validation ``metric`` (``mode`` ``max`` or ``min``; the latest
    step wins ties).

    Raises:
        CheckpointError: if the output dir holds no checkpoint.
    """
    scored = [(d, checkpoint_metrics(d)) for _, d in list_checkpoints(output_dir)]
    if not scored:
        raise CheckpointError(f"no checkpoint in {Path(output_dir) / RUN_NAME}")
    sign = 1.0 if mode == "max" else -1.0
    return max(scored, key=lambda dm: (sign * dm[1][metric], dm[1]["step"]))


def check_training_data(cfg: ExperimentConfig) -> None:
    """Fail fast (one-line error) when the train or val split cannot serve the configured episodes or batches
    (the task's ``check_data`` and ``check_val_data``), or a weight file the model starts from (e.g. MetaBaseline's
    ``pretrained_backbone``) is missing.

    Raises:
        DataError: a split cannot serve the episodes / batches; CheckpointError: a missing start weight file.
    """
    from fewray.platform.checkpoint import resolve_checkpoint

    extra = cfg.model.model_dump()
    for key in init_file_args(cfg.model.type):
        if extra.get(key):
            try:
                resolve_checkpoint(extra[key])
            except CheckpointError as exc:
                raise CheckpointError(f"model.{key}: {exc}") from None
    task = task_for(cfg)
    task.check_data(cfg)
    task.check_val_data(cfg)


def training_identity(cfg: ExperimentConfig, cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """The model-and-data identity of a training run (:func:`fewray.platform.preflight.identity`), with the
    catalog's ``catalog.json`` when it is a local one."""
    catalog = read_catalog_info(cfg.data.root) if "://" not in cfg.data.root else {}
    return identity(cfg_dict, catalog, init_file_args(cfg.model.type))


def check_resume(latest: Path, ident: dict[str, Any], output_dir: Path) -> None:
    """The output directory's latest checkpoint must be of the same model and data as the config.

    Raises:
        CheckpointError: naming the first keys that differ, e.g. ``model.type is 'ProtoNet' there,
        'MatchingNet' here``.
    """
    state = load_checkpoint(latest)
    stored = state.get("identity") or {}
    config = state.get("config")
    if not stored and isinstance(config, dict):  # checkpoints written before identities were stored
        stored = identity(config, None, init_file_args((config.get("model") or {}).get("type")))
    check_same_identity(stored, ident, f"--output-dir {output_dir}",
                        "choose a new --output-dir; the same one resumes only the same model on the same data")


def fit_training(cfg: ExperimentConfig, cfg_dict: dict, output_dir: Path, uri: str, run_id: str | None, start_step: int,
         latest: Path | None, callbacks: list | None = None, extra_loop_cfg: dict | None = None) -> None:
    """Build the episode stream and the TorchTrainer, and fit from ``start_step``.

    Args:
        cfg, cfg_dict: the validated config and its plain-dict form (sent to the workers).
        output_dir: Ray Train storage; checkpoints go to ``output_dir/metatrain/checkpoint_<step>``.
        uri, run_id: MLflow tracking URI and the run rank 0 logs metrics to (None: no metric logging).
        start_step, latest: resume point and the checkpoint directory to resume from (or None).
        callbacks: extra Ray Train ``UserCallback`` objects, e.g. Tune's ``TuneReportCallback`` in a sweep trial.
        extra_loop_cfg: more keys for :func:`train_loop_per_worker` (e.g. ``placement_group_file``).
    """
    tc = cfg.train
    world = tc.num_workers
    dataset = task_for(cfg).dataset(cfg, start_step * world, tc.num_steps * world)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": cfg_dict, "tracking_uri": uri, "run_id": run_id, "start_step": start_step,
                           "resume_from": str(latest) if latest else None,
                           "spool_path": str(output_dir / SPOOL_FILE), **(extra_loop_cfg or {})},
        scaling_config=ScalingConfig(num_workers=world, use_gpu=tc.use_gpu, resources_per_worker={"CPU": tc.cpus_per_worker}),
        torch_config=TorchConfig(backend="nccl" if tc.use_gpu else "gloo"),
        run_config=RunConfig(
            name=RUN_NAME,
            storage_path=str(output_dir),
            checkpoint_config=CheckpointConfig(
                num_to_keep=tc.keep_checkpoints,
                checkpoint_score_attribute=cfg.val.metric,
                checkpoint_score_order=cfg.val.mode,
            ),
            failure_config=FailureConfig(max_failures=tc.max_failures),
            callbacks=list(callbacks or []),
        ),
        datasets={"train": dataset},
    )
    fit_interruptibly(trainer)


def fit_interruptibly(trainer: TorchTrainer) -> None:
    """``trainer.fit()`` in a helper thread while the main thread waits, so that Ctrl-C stops at once.

    In the main thread Ray Train replaces the SIGINT handler with its "graceful abort", which returns from
    ``fit`` as if training had finished or exits the process with status 1 and no message. Run from
    another thread, ``fit`` leaves signals alone: Ctrl-C (and fewray's SIGTERM, turned into SIGINT by
    :func:`fewray.platform.errors.run_cli`) raises ``KeyboardInterrupt`` in the waiting main thread; the
    pipeline reports it in one line, exits 130 (143), and Ray's shutdown at exit stops the workers. The
    checkpoints already reported are complete (a half-copied one is skipped on resume), so the same
    command resumes.
    """
    outcome: dict[str, BaseException] = {}

    def run() -> None:
        try:
            trainer.fit()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="fewray-trainer-fit", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.2)
    if "error" in outcome:
        raise outcome["error"]


def prepare_metatrain(cfg: ExperimentConfig, output_dir: Path):
    """Every check of a training run that needs neither Ray nor MLflow, in the order a user's mistakes are found.

    The output directory (writable; its checkpoints, if any, of the same model and data), the train and val
    splits against the episodes, the catalog's image size, and the files the model starts from.

    Returns:
        ``(cfg, cfg_dict, identity, latest, start_step)``: the config with the base-class count resolved, its
        dict form, its model-and-data identity, and the checkpoint to resume from (or None) with its step.

    Raises:
        OutputPathError, DataError, CheckpointError: naming the path or key.
    """
    check_output_dir(output_dir)
    check_training_data(cfg)
    check_image_size(cfg)
    cfg = task_for(cfg).resolve_config(resolve_base_classes(cfg))
    for hook in cfg.train.hooks:  # an unknown hook or argument: one line, before any work
        HOOKS.build(hook, "train.hooks")
    build_classifier(cfg.model)  # arguments only the built model checks (files it reads, sizes): one line, here
    cfg_dict = cfg.to_dict()
    ident = training_identity(cfg, cfg_dict)
    latest, start_step = latest_checkpoint(output_dir)
    if latest is not None:
        check_resume(latest, ident, output_dir)
    return cfg, cfg_dict, ident, latest, start_step


def _best_model(cfg: ExperimentConfig, best_dir: Path) -> torch.nn.Module:
    """The model of the best checkpoint, in eval mode (for the task's training artifacts)."""
    model = build_classifier(cfg.model, for_checkpoint=True)
    model.load_state_dict(load_checkpoint(best_dir)["model"])
    return model.eval()


def _earlier_train_seconds(output_dir: Path) -> float:
    """``train_seconds`` of the output directory's ``train_result.json`` (a finished run), else 0."""
    try:
        return float(json.loads((output_dir / "train_result.json").read_text())["train_seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


def run_metatrain(cfg: ExperimentConfig, output_dir: str | Path, tracking_uri: str | None = None) -> dict[str, Any]:
    """Meta-train ``cfg`` with Ray Train; resume if ``output_dir`` holds checkpoints of an earlier run.

    Args:
        cfg: a validated experiment config.
        output_dir: where Ray Train writes checkpoints and where ``train_result.json`` goes.
        tracking_uri: MLflow tracking URI (overrides ``cfg.tracking.tracking_uri``).

    Returns:
        The content of ``train_result.json``: ``best_checkpoint`` (path of ``checkpoint.pt``),
        ``best_step``, ``best_val_<metric>`` for the task's ``summary_metrics`` (few-shot: ``best_val_accuracy_mean``,
        ``best_val_ci95``; multi-label: ``best_val_mAP``, ``best_val_CF1``, ``best_val_OF1``), ``best_metric``
        (``val.metric``, its mode and best value), ``latest_checkpoint``,
        ``num_steps``, ``train_seconds`` (all the training time of the output directory's finished runs: a re-run
        of a finished run adds its own seconds to the earlier ones), ``mlflow_run_id``, ``tracking_uri``.

    Raises:
        DataError, ConfigError, CheckpointError (another model's checkpoints in ``output_dir``), OutputPathError,
        ResourceError (more CPUs/GPUs than the cluster has), TrackingError: bad input, before anything starts.
        Interrupted: Ctrl-C or SIGTERM stopped training; a re-run resumes.
    """
    import mlflow
    import yaml

    from fewray.platform.plots import plot_training_curves
    from fewray.platform.tracking import log_dict_params, metric_history, replay_spool, run_exists, setup_tracking

    output_dir = Path(output_dir).resolve()
    cfg, cfg_dict, ident, latest, start_step = prepare_metatrain(cfg, output_dir)
    init_ray()
    tc = cfg.train
    check_resources(tc.num_workers, tc.cpus_per_worker, tc.use_gpu, "training",
                    "train.num_workers / train.cpus_per_worker / train.use_gpu", wait_s=tc.resource_wait_s)
    uri = setup_tracking(tracking_uri or cfg.tracking.tracking_uri, cfg.tracking.experiment)
    id_file = output_dir / "mlflow_run_id"
    old_run_id = id_file.read_text().strip() if latest and id_file.is_file() else None
    run_id = old_run_id if old_run_id and run_exists(uri, old_run_id) else None
    if old_run_id and run_id is None:
        log.warning("MLflow run %s of %s is not in the tracking store %s: resuming into a new run that names it",
                    old_run_id, output_dir, uri)
    output_dir.mkdir(parents=True, exist_ok=True)
    # a finished run that is re-run (or extended to more steps) keeps the training time it already took
    earlier_seconds = _earlier_train_seconds(output_dir) if latest else 0.0
    t0 = time.perf_counter()
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else cfg.name) as run:
        id_file.write_text(run.info.run_id)
        if run_id is None:
            log_dict_params(flatten(cfg_dict))
            mlflow.set_tags({"fewray.kind": "metatrain", "fewray.fingerprint": fingerprint(ident)})
            mlflow.log_text(yaml.safe_dump(cfg_dict, sort_keys=False), "config/config.yaml")
        if start_step:
            mlflow.set_tag("fewray.resumed_from_step", str(start_step))
        if old_run_id and run_id is None:
            mlflow.set_tag("fewray.resumed_from_run_id", old_run_id)
        if start_step < tc.num_steps:
            fit_training(cfg, cfg_dict, output_dir, uri, run.info.run_id, start_step, latest,
                 extra_loop_cfg={"identity": ident})
        replay_spool(uri, output_dir / SPOOL_FILE)  # metrics a worker could not send before it finished
        _, reached = latest_checkpoint(output_dir)
        if reached < tc.num_steps:  # a safeguard: fit returned before the last step (Ray Train's controller aborted)
            raise Interrupted(f"training stopped at step {reached} of {tc.num_steps}; re-run to resume")
        seconds = earlier_seconds + time.perf_counter() - t0
        best_dir, best = best_checkpoint(output_dir, cfg.val.metric, cfg.val.mode)
        newest_dir, _ = latest_checkpoint(output_dir)
        task = task_for(cfg)
        best_val = {f"best_val_{k}": float(best[k]) for k in task.summary_metrics}  # few-shot: accuracy_mean, ci95
        mlflow.log_metrics({**best_val, "train_seconds": seconds})
        mlflow.log_artifact(str(best_dir / CHECKPOINT_FILE), "checkpoint")
        shown = task.summary_metrics[0]  # the right panel's validation metric (few-shot: accuracy_mean)
        history = metric_history(mlflow.tracking.MlflowClient(uri), run.info.run_id, ["loss", "accuracy", f"val_{shown}"])
        with tempfile.TemporaryDirectory() as d:
            mlflow.log_artifact(str(plot_training_curves(history, Path(d) / "training_curves.png", shown)), "plots")
            for path in task.training_artifacts(cfg, lambda: _best_model(cfg, best_dir), d):  # e.g. drawn detections
                mlflow.log_artifact(str(path), "plots")
        summary = {
            "best_checkpoint": str(best_dir / CHECKPOINT_FILE),
            "best_step": int(best["step"]),
            **best_val,
            "best_metric": {"name": cfg.val.metric, "mode": cfg.val.mode, "value": float(best[cfg.val.metric])},
            "latest_checkpoint": str((newest_dir or best_dir) / CHECKPOINT_FILE),
            "num_steps": tc.num_steps,
            "resumed_from_step": start_step,
            "train_seconds": round(seconds, 1),
            "mlflow_run_id": run.info.run_id,
            "mlflow_experiment_id": run.info.experiment_id,
            "tracking_uri": uri,
        }
        (output_dir / "train_result.json").write_text(json.dumps(summary, indent=2) + "\n")
        mlflow.log_artifact(str(output_dir / "train_result.json"))
    return summary
