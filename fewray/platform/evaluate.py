"""Evaluation of a multi-label checkpoint on a catalog split: images scored by Ray tasks, one MLflow run.

A detector's checkpoint goes to :mod:`fewray.platform.evaluate_detection` (COCO AP over merged detections).

The flow of ``pipelines/evaluate.py`` (the multi-label counterpart of ``pipelines/metatest.py``):

1. every check on the driver, before Ray or MLflow start: the config's model is a multi-label one (training task
   ``multi_label``), the catalog a multi-label catalog of the config's image size with the split, the checkpoint
   found, of the config's model, with weights that fit;
2. the split's images (decoded once on the driver, shipped once through the object store) are cut into
   contiguous shards of whole batches (:func:`fewray.platform.retrieval.batch_shards`); one Ray task per shard
   rebuilds the model from the checkpoint, scores its images (sigmoids, :func:`fewray.tasks.multi_label.score_images`)
   and returns the evaluator's ``process`` partial (its scores and targets);
3. the driver ``merge``\\ s the partials and ``compute``\\ s mAP, CP/CR/CF1 and OP/OR/OF1 once over the whole split
   (:class:`~fewray.evaluation.multi_label.MultiLabelEvaluator`, the head's ``thr`` / ``topk``): the same numbers
   for any number of Ray tasks; the MLflow run holds the params, the metrics and ``result.json``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch

from fewray.algorithms import build_classifier
from fewray.evaluation.multi_label import MultiLabelEvaluator
from fewray.platform.checkpoint import load_checkpoint, load_model_state, resolve_checkpoint
from fewray.platform.config import ExperimentConfig
from fewray.platform.errors import ConfigError
from fewray.platform.preflight import check_checkpoint_model, check_image_size
from fewray.platform.runtime import default_workers, get_all, init_ray, task_options


def _score_shard(model_cfg: dict, state: dict, images: np.ndarray, targets: np.ndarray, start: int, stop: int,
                 batch_size: int, threads: int, evaluator: MultiLabelEvaluator) -> dict[str, np.ndarray]:
    """The evaluator's partial of images ``start..stop-1`` (a Ray task): the model rebuilt, its scores."""
    from fewray.tasks.multi_label import score_images

    torch.set_num_threads(max(1, threads))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = build_classifier(model_cfg, for_checkpoint=True)
    model.load_state_dict(state)
    scores = score_images(model.to(device), images[start:stop].copy(), batch_size, device)  # the store's array is read-only
    return evaluator.process(scores, targets[start:stop])


def prepare_evaluation(cfg: ExperimentConfig, checkpoint: str | Path, split: str | None = None):
    """Every check of an evaluation, on the driver, before Ray or MLflow start.

    Returns:
        ``(label, state)``: the checkpoint's path and its loaded state.

    Raises:
        ConfigError: the model's training task is not ``multi_label``; DataError: not a multi-label catalog, a
            missing split, another image size; CheckpointError: a missing or unreadable checkpoint, one of another
            model, or weights that do not fit.
    """
    from fewray.data.catalog import _split_path
    from fewray.data.multi_label import check_multi_label_catalog
    from fewray.tasks import task_for
    from fewray.tasks.detection import DetectionTask
    from fewray.tasks.multi_label import MultiLabelTask

    if isinstance(task_for(cfg), DetectionTask):  # a detector: fewray/platform/evaluate_detection.py
        from fewray.platform.evaluate_detection import prepare_detection_evaluation

        return prepare_detection_evaluation(cfg, checkpoint, split)[1:]
    if not isinstance(task_for(cfg), MultiLabelTask):
        raise ConfigError(f"model.type {cfg.model.type} is neither a multi-label model nor a detector (its training "
                          f"task is {type(task_for(cfg)).__name__}); meta-test it with pipelines/metatest.py")
    check_multi_label_catalog(cfg.data.root)
    _split_path(cfg.data.root, split or cfg.test.split)
    check_image_size(cfg)
    path = resolve_checkpoint(checkpoint)
    state = load_checkpoint(path)
    check_checkpoint_model(state, cfg.model.model_dump(), str(path))
    load_model_state(build_classifier(cfg.model.model_dump(), for_checkpoint=True), state, path)
    return str(path), state


def score_split(model_cfg: dict, model_state: dict, images: np.ndarray, targets: np.ndarray,
                evaluator: MultiLabelEvaluator, batch_size: int = 64, num_workers: int | None = None) -> dict[str, float]:
    """The evaluator's metrics of a model on images ``(N, C, H, W)`` uint8 with targets ``(N, K)``, the images
    scored by Ray tasks over shards of whole batches (``ray`` must be initialised).

    Args:
        model_cfg: the ``model:`` section (``build_classifier``); model_state: its state dict.
        evaluator: ``process`` runs in each task, ``merge`` / ``compute`` here.
        batch_size: images per forward pass; num_workers: Ray tasks (default one per GPU, else per CPU slot).

    Raises:
        whatever a task raised (a model that does not score), after the other tasks are collected.
    """
    from fewray.platform.retrieval import batch_shards

    shards = batch_shards(len(images), batch_size, num_workers or default_workers())
    opts, threads = task_options(len(shards))
    state_ref, images_ref, targets_ref = ray.put({k: v.cpu() for k, v in model_state.items()}), ray.put(images), \
        ray.put(targets)
    remote = ray.remote(_score_shard).options(max_retries=3, **opts)
    refs = [remote.remote(model_cfg, state_ref, images_ref, targets_ref, s.start, s.stop, batch_size, threads,
                          evaluator) for s in shards]
    return evaluator.compute(evaluator.merge(get_all(refs)))


def log_evaluation_params(cfg: ExperimentConfig, checkpoint: str, split: str) -> None:
    """The active MLflow run's tag ``fewray.kind=evaluate``, the config's params with the checkpoint and split, and
    the config as ``config/config.yaml`` (the start of every evaluation run: multi-label and detection)."""
    import mlflow
    import yaml

    from fewray.platform.config import flatten
    from fewray.platform.tracking import log_dict_params

    mlflow.set_tag("fewray.kind", "evaluate")
    cfg_dict = cfg.to_dict()
    log_dict_params({**flatten(cfg_dict), "checkpoint": checkpoint, "split": split})
    mlflow.log_text(yaml.safe_dump(cfg_dict, sort_keys=False), "config/config.yaml")


def evaluate_checkpoint(cfg: ExperimentConfig, checkpoint: str | Path, split: str | None = None,
                        num_workers: int | None = None, tracking_uri: str | None = None) -> dict[str, Any]:
    """Evaluate a multi-label checkpoint on ``split`` (default ``test.split``) with Ray and log it to MLflow.

    Args:
        cfg: the experiment config (``model:`` the architecture and the head's ``thr`` / ``topk``, ``data:`` the
            catalog, ``test.batch_size`` images per forward pass).
        checkpoint: ``checkpoint.pt``, a checkpoint directory or a ``train_result.json``.
        split: the catalog split (default ``test.split``); num_workers: Ray tasks (default one per CPU slot).
        tracking_uri: MLflow tracking URI (default ``cfg.tracking.tracking_uri``, ``MLFLOW_TRACKING_URI``, ./mlflow.db).

    Returns:
        The result JSON: ``mAP``, ``CP``, ``CR``, ``CF1``, ``OP``, ``OR``, ``OF1`` (percent), ``split``,
        ``num_images``, ``thr`` / ``topk``, ``seconds``, ``line``, ``checkpoint``, ``mlflow_run_id``,
        ``mlflow_experiment_id``, ``tracking_uri``.

    Raises:
        as :func:`prepare_evaluation`, before any Ray task starts; TrackingError: an unreachable tracking server.

    Example::

        >>> out = evaluate_checkpoint(cfg, "runs/ml/train_result.json")  # doctest: +SKIP
        >>> out["line"]  # doctest: +SKIP
        'test split (103 images): mAP 52.10, CF1 25.31, OF1 44.20 (thr 0.5)'
    """
    import mlflow

    from fewray.data.multi_label import load_multi_label_split
    from fewray.platform.tracking import setup_tracking

    from fewray.tasks import task_for
    from fewray.tasks.detection import DetectionTask

    if isinstance(task_for(cfg), DetectionTask):  # COCO AP over merged detections
        from fewray.platform.evaluate_detection import evaluate_detector

        return evaluate_detector(cfg, checkpoint, split, num_workers, tracking_uri)
    split = split or cfg.test.split
    label, state = prepare_evaluation(cfg, checkpoint, split)
    uri = setup_tracking(tracking_uri or cfg.tracking.tracking_uri, cfg.tracking.experiment)
    data = load_multi_label_split(cfg.data.root, split)
    head = cfg.model.head
    evaluator = MultiLabelEvaluator(thr=head.get("thr"), topk=head.get("topk"))
    init_ray()
    t0 = time.perf_counter()
    with mlflow.start_run(run_name=f"{cfg.name}-evaluate-{split}") as run:
        log_evaluation_params(cfg, label, split)
        metrics = score_split(cfg.model.model_dump(), state["model"], data.images, data.targets, evaluator,
                              cfg.test.batch_size, num_workers)
        seconds = time.perf_counter() - t0
        mlflow.log_metrics({**metrics, "seconds": seconds})
        rule = f"thr {evaluator.thr:g}" if evaluator.thr is not None else f"top-{evaluator.topk}"
        line = (f"{split} split ({len(data.targets)} images): "
                + ", ".join(f"{k} {metrics[k]:.2f}" for k in ("mAP", "CF1", "OF1")) + f" ({rule})")
        out = {**metrics, "split": split, "num_images": len(data.targets), "thr": evaluator.thr,
               "topk": evaluator.topk, "seconds": round(seconds, 1), "line": line, "checkpoint": label,
               "mlflow_run_id": run.info.run_id, "mlflow_experiment_id": run.info.experiment_id, "tracking_uri": uri}
        mlflow.log_dict(out, "result.json")
    return out
