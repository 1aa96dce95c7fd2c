"""Evaluation of a detector checkpoint on a detection catalog split: images shared out to Ray tasks, one COCOeval.

The detection branch of ``pipelines/evaluate.py``:

1. every check on the driver, before Ray or MLflow start: the config's model is a detector (training task
   ``detection``), the catalog a detection catalog with the split, the checkpoint found, of the config's model,
   with weights that fit;
   a query-support detector (Meta R-CNN, FSDetView) runs ``model_init`` here, once, on the support instances of
   the config's training set, so every task detects with the same class vectors;
2. the split's records (image bytes and ground truth) go once through the object store, cut into contiguous
   shards (:func:`fewray.platform.retrieval.batch_shards`); one Ray task per shard rebuilds the detector from the
   checkpoint, decodes and detects its images and returns the evaluator's ``process`` partial (COCO-format
   detections and the image ids it evaluated);
3. the driver ``merge``\\ s the partials and runs pycocotools' ``COCOeval`` once per class split over all the
   detections (:class:`~fewray.evaluation.coco_detection.CocoDetectionEvaluator`): the same numbers for any number
   of Ray tasks, never an average of shard APs; the MLflow run holds params, metrics, ``result.json`` and a PNG of
   the detections on a few images.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import ray
import torch

from fewray.algorithms import build_classifier
from fewray.platform.checkpoint import load_checkpoint, load_model_state, resolve_checkpoint
from fewray.platform.config import ExperimentConfig
from fewray.platform.errors import ConfigError
from fewray.platform.preflight import check_checkpoint_model
from fewray.platform.runtime import default_workers, get_all, init_ray, task_options


def _warm_up() -> int:
    """A no-op Ray task: the worker that runs it imports this module (torch, torchvision, fewray) and stays warm."""
    import os

    import fewray.tasks.detection  # noqa: F401  (the import is the point)

    return os.getpid()


def prewarm_detection_workers(num_workers: int, options: dict | None = None) -> list:
    """Start ``num_workers`` no-op tasks with the shards' resource request (``options``, default
    :func:`~fewray.platform.runtime.task_options`'s for ``num_workers`` tasks) so that the workers of a coming
    :func:`detect_split` have imported torch, torchvision and fewray by the time its shards arrive (a fresh
    worker takes ~4 s here).

    The same request as the shards' tasks: the shards then queue for those CPUs and reuse the warmed workers
    (zero-CPU warm-ups let Ray start two more workers for the shards while the first ones were still importing:
    four imports on two cores, measured 2 tasks 1.07x faster than 1 instead of 1.5x). Fire and forget: call it
    right after Ray starts, before driver work (MLflow, reading the split) that the imports then overlap. Returns
    the tasks' refs (``ray.get`` them to wait).

    Example::

        >>> refs = prewarm_detection_workers(2)     # doctest: +SKIP
    """
    opts = options if options is not None else task_options(num_workers)[0]
    return [ray.remote(_warm_up).options(**opts).remote() for _ in range(max(0, num_workers))]


def _detect_shard(model_cfg: dict, state: dict, records: list[dict], start: int, stop: int, batch_size: int,
                  threads: int, scorer_part: Any) -> Any:
    """The evaluator's partial of images ``start..stop-1`` (a Ray task): the detector rebuilt, its detections."""
    from fewray.tasks.detection import decode_record_image, predict_images

    torch.set_num_threads(max(1, threads))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = build_classifier(model_cfg, for_checkpoint=True)
    model.load_state_dict(state)
    model.to(device).eval()
    from fewray.tasks.detection import to_outputs

    evaluator, category_ids = scorer_part
    images = [decode_record_image(r) for r in records[start:stop]]
    dets = predict_images(model, images, device, batch_size)
    outputs = to_outputs(dets, records[start:stop], category_ids, list(model_cfg["class_names"]))
    return evaluator.process(outputs), (outputs if start == 0 else None)


def prepare_detection_evaluation(cfg: ExperimentConfig, checkpoint: str | Path, split: str | None = None):
    """Every check of a detection evaluation, on the driver, before Ray or MLflow start.

    Returns:
        ``(cfg, label, state)``: the config with ``model.class_names`` resolved, the checkpoint's path, its state.

    Raises:
        ConfigError: the model is not a detector; DataError: not a detection catalog, a missing split, an unknown
            class; CheckpointError: a missing or unreadable checkpoint, one of another model (a classifier's), or
            weights that do not fit.

    Example::

        >>> cfg, label, state = prepare_detection_evaluation(cfg, "runs/det/base/train_result.json")  # doctest: +SKIP
    """
    from fewray.data.detection.training import eval_records
    from fewray.tasks import task_for
    from fewray.tasks.detection import DetectionTask

    task = task_for(cfg)
    if not isinstance(task, DetectionTask):
        raise ConfigError(f"model.type {cfg.model.type} is not a detector (its training task is not detection)")
    cfg = task.resolve_config(cfg)
    eval_records(cfg.data.root, split or cfg.test.split, with_images=False)
    path = resolve_checkpoint(checkpoint)
    state = load_checkpoint(path)
    check_checkpoint_model(state, cfg.model.model_dump(), str(path))
    model = build_classifier(cfg.model.model_dump(), for_checkpoint=True)
    load_model_state(model, state, path)
    if hasattr(model, "model_init"):  # a query-support detector: its class vectors from the config's supports
        from fewray.tasks.query_support import init_supports, run_model_init

        run_model_init(model, *init_supports(cfg))
        state = {**state, "model": model.state_dict()}
    return cfg, str(path), state


def detect_split(model_cfg: dict, model_state: dict, scorer, batch_size: int = 2, num_workers: int | None = None,
                 threads: int | None = None) -> tuple[dict[str, float], list[dict]]:
    """COCO AP of a detector on a split's images, detected by Ray tasks over shards (``ray`` initialised).

    Args:
        model_cfg: the ``model:`` section with ``class_names``; model_state: its state dict.
        scorer: a :class:`~fewray.tasks.detection.DetectionScorer` of the split (``decode=False`` is enough).
        batch_size: images per forward pass; num_workers: Ray tasks (default one per GPU, else per CPU slot).
        threads: CPUs (and torch threads) per task; default an even share of the cluster's CPUs.

    Returns:
        ``(metrics, outputs of the first shard)`` (the latter for the drawn examples).

    Example::

        >>> scorer = DetectionScorer("data/coco_fsdet", "test", decode=False)             # doctest: +SKIP
        >>> metrics, _ = detect_split(model_cfg, state["model"], scorer, num_workers=2)    # doctest: +SKIP
        >>> metrics["AP50"], metrics["NOVEL_AP"]                                           # doctest: +SKIP
        (4.12, 0.87)
    """
    from fewray.platform.retrieval import batch_shards

    records = scorer.records
    shards = batch_shards(len(records), batch_size, num_workers or default_workers())
    opts, share = task_options(len(shards))
    if threads is None:
        threads = share
    elif "num_cpus" in opts:
        opts = {**opts, "num_cpus": threads}
    state_ref = ray.put({k: v.cpu() for k, v in model_state.items()})
    records_ref = ray.put(records)
    part_ref = ray.put((scorer.evaluator, scorer.category_ids))
    remote = ray.remote(_detect_shard).options(max_retries=3, **opts)
    refs = [remote.remote(model_cfg, state_ref, records_ref, s.start, s.stop, batch_size, threads, part_ref)
            for s in shards]
    results = get_all(refs)
    ev = scorer.evaluator
    metrics = scorer.metrics(ev.merge([p for p, _ in results]))
    return metrics, results[0][1] or []


def evaluate_detector(cfg: ExperimentConfig, checkpoint: str | Path, split: str | None = None,
                      num_workers: int | None = None, tracking_uri: str | None = None) -> dict[str, Any]:
    """Evaluate a detector checkpoint on ``split`` (default ``test.split``) with Ray and log it to MLflow.

    Returns:
        The result JSON: ``AP``, ``AP50``, ``AP75``, ``APs/m/l``, ``BASE_AP*``, ``NOVEL_AP*`` (percent; NaN for a
        class split the catalog lacks), ``split``, ``num_images``, ``seconds``, ``images_per_second``, ``line``,
        ``checkpoint``, ``mlflow_run_id``, ``mlflow_experiment_id``, ``tracking_uri``, ``summary`` (COCOeval's).

    Raises:
        as :func:`prepare_detection_evaluation`, before any Ray task starts; TrackingError.

    Example::

        >>> out = evaluate_detector(cfg, "runs/det/tfa_10shot/train_result.json", num_workers=2)  # doctest: +SKIP
        >>> out["line"]                                                                          # doctest: +SKIP
        'test split (206 images): AP 2.10, AP50 4.30, AP75 1.80, BASE_AP 2.50, NOVEL_AP 0.90, NOVEL_AP50 2.10'
    """
    import math
    import tempfile

    import mlflow

    from fewray.platform.evaluate import log_evaluation_params
    from fewray.platform.tracking import setup_tracking
    from fewray.tasks.detection import DetectionScorer

    split = split or cfg.test.split
    cfg, label, state = prepare_detection_evaluation(cfg, checkpoint, split)
    uri = setup_tracking(tracking_uri or cfg.tracking.tracking_uri, cfg.tracking.experiment)
    init_ray()
    t0 = time.perf_counter()
    prewarm_detection_workers(num_workers or default_workers())  # their imports overlap the split's reading
    d = cfg.data
    scorer = DetectionScorer(d.root, split, d.base_classes, d.novel_classes, decode=False, classwise=True)
    with mlflow.start_run(run_name=f"{cfg.name}-evaluate-{split}") as run:
        log_evaluation_params(cfg, label, split)
        metrics, first = detect_split(cfg.model.model_dump(), state["model"], scorer, 2, num_workers)
        seconds = time.perf_counter() - t0
        finite = {k: v for k, v in metrics.items() if not math.isnan(v)}
        mlflow.log_metrics({**finite, "seconds": seconds})
        shown = [k for k in ("AP", "AP50", "AP75", "BASE_AP", "BASE_AP50", "NOVEL_AP", "NOVEL_AP50") if k in finite]
        line = f"{split} split ({len(scorer.records)} images): " + ", ".join(f"{k} {metrics[k]:.2f}" for k in shown)
        out = {**metrics, "split": split, "num_images": len(scorer.records), "seconds": round(seconds, 1),
               "images_per_second": round(len(scorer.records) / seconds, 2), "line": line, "checkpoint": label,
               "mlflow_run_id": run.info.run_id, "mlflow_experiment_id": run.info.experiment_id, "tracking_uri": uri,
               "summary": scorer.evaluator.last_summary}
        mlflow.log_dict(out, "result.json")
        if first:
            from fewray.platform.plots import plot_detections

            with tempfile.TemporaryDirectory() as tmp:
                png = plot_detections(scorer.records[: min(4, len(first))], first[:4],
                                      {v: k for k, v in scorer.category_ids.items()}, Path(tmp) / "detections.png")
                mlflow.log_artifact(str(png), "plots")
    return out
