"""Evaluators (:class:`fewray.core.protocols.Evaluator`): per-shard ``process`` inside Ray tasks, ``merge`` and
``compute`` on the driver. Plain numpy/torch: no Ray or MLflow."""

import importlib as _importlib

# detection evaluators, imported on first use (pycocotools and torchvision load only when asked for)
_LAZY = {"CocoDetectionEvaluator": "coco_detection", "coco_gt_from_records": "coco_detection",
         "VOCDetectionEvaluator": "voc_map", "eval_map": "voc_map"}


def __getattr__(name: str):
    """``fewray.evaluation.<name>`` for the detection evaluators (:data:`_LAZY`), imported on first access.

    Raises:
        AttributeError: ``name`` is not one of them.

    Example::

        >>> from fewray.evaluation import eval_map
        >>> eval_map.__module__
        'fewray.evaluation.voc_map'
    """
    if name in _LAZY:
        return getattr(_importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
