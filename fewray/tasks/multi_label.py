"""Multi-label classification's training task: shuffled batches of a multi-label catalog's images with multi-hot
targets, validated by mAP (and CP/CR/CF1, OP/OR/OF1) on the ``val`` split.

The catalog is one that ``pipelines/prepare_data.py multilabel`` writes from COCO JSON or VOC XML
(:mod:`fewray.data.sources.multilabel`, ``catalog.json`` with ``task: "multi_label"``); the model is
:class:`~fewray.algorithms.classifiers.ImageClassifier` with a multi-label head
(``configs/multi_label/*.yaml``), trained by the same runtime as every other task (Ray Data stream, Ray Train
DDP, checkpoints, resume, MLflow, best checkpoint by ``val.metric``, here ``mAP``).

Example::

    >>> import torch
    >>> from fewray.tasks import TASKS
    >>> task = TASKS.get("multi_label")()
    >>> row = {"img": torch.zeros(1, 4, 3, 32, 32, dtype=torch.uint8), "gt_label": torch.zeros(1, 4, 80).char()}
    >>> inputs = task.model_inputs(row)
    >>> inputs["img"].shape, inputs["img"].dtype, inputs["gt_label"].shape, inputs["gt_label"].dtype
    (torch.Size([4, 3, 32, 32]), torch.float32, torch.Size([4, 80]), torch.float32)
    >>> task.val_metrics[0], task.val_line({"mAP": 61.234, "CF1": 40.0, "OF1": 55.5})
    ('mAP', 'validation mAP 61.23, CF1 40.00, OF1 55.50')
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from fewray.evaluation.multi_label import MultiLabelEvaluator
from fewray.tasks.base import TASKS, TrainingTask

if TYPE_CHECKING:
    import torch

    from fewray.platform.config import ExperimentConfig


def score_images(model: "torch.nn.Module", images: np.ndarray, batch_size: int = 128,
                 device: Any = "cpu") -> np.ndarray:
    """A multi-label model's scores ``(N, C)`` (float32, its ``predict_scores``: sigmoids) of uint8 images
    ``(N, C, H, W)``, in eval mode and batches of ``batch_size``; the model's train/eval mode is restored.

    Example::

        >>> import torch
        >>> from fewray.algorithms import build_classifier
        >>> model = build_classifier({"type": "ImageClassifier", "backbone": {"type": "Conv4", "in_channels": 3},
        ...     "head": {"type": "MultiLabelLinearClsHead", "num_classes": 5, "in_channels": 256}})
        >>> score_images(model, np.zeros((3, 3, 32, 32), np.uint8), batch_size=2).shape
        (3, 5)
    """
    from fewray.platform.features import batched_outputs

    return batched_outputs(model, images, "predict_scores", batch_size, str(device)).numpy()


class MultiLabelValidator:
    """Validation of a multi-label model on a split: its scores of every image through
    :class:`~fewray.evaluation.multi_label.MultiLabelEvaluator` (``process`` / ``merge`` / ``compute``, one shard).

    Args:
        cfg (ExperimentConfig): uses ``data.root``, ``val.split`` and ``val.batch_size``; the head's ``thr`` /
            ``topk`` (``model.head``, default ``thr = 0.5``) decide the CP/CR/CF1/OP/OR/OF1 predictions.

    Raises:
        DataError: the split cannot be read.
    """

    def __init__(self, cfg: "ExperimentConfig") -> None:
        from fewray.data.multi_label import load_multi_label_split

        self.cfg = cfg
        data = load_multi_label_split(cfg.data.root, cfg.val.split)
        self.images, self.targets = data.images, data.targets
        head = cfg.model.head
        self.evaluator = MultiLabelEvaluator(thr=head.get("thr"), topk=head.get("topk"))

    def __call__(self, model: "torch.nn.Module", device: Any = "cpu") -> dict[str, float]:
        """``{"mAP", "CP", "CR", "CF1", "OP", "OR", "OF1"}`` in percent; leaves ``model`` in train mode."""
        ev = self.evaluator
        scores = score_images(model, self.images, self.cfg.val.batch_size, device)
        model.train()
        return ev.compute(ev.merge([ev.process(scores, self.targets)]))


@TASKS.register(name="multi_label")
class MultiLabelTask(TrainingTask):
    """Shuffled batches of ``train.batch_size`` images of a multi-label catalog with their multi-hot targets:
    ``model(mode="train", img, gt_label)`` (``ImageClassifier`` with a multi-label head); batches rebuilt from
    ``(seed, batch id)`` (:class:`~fewray.data.multi_label.MultiLabelBatchBuilder`), validated by
    :class:`MultiLabelValidator` (``val.metric: mAP``, ``val.mode: max``)."""

    rate_name = "batches_per_second"
    val_name = "validation"
    val_metrics = MultiLabelEvaluator.metrics
    summary_metrics = ("mAP", "CF1", "OF1")

    def dataset(self, cfg, start, stop):
        """Batches ``start..stop-1`` of ``train.batch_size`` images (:func:`fewray.platform.streaming.multi_label_dataset`)."""
        from fewray.platform.streaming import multi_label_dataset

        t, d = cfg.train, cfg.data
        return multi_label_dataset(d.root, "train", t.batch_size, cfg.seed, start=start, stop=stop,
                                   augment=d.augment, image_size=d.image_size)

    def check_data(self, cfg) -> None:
        """The catalog must be a multi-label one with RGB images, the head sized to its classes, and the train
        split must hold images.

        Raises:
            DataError: not a multi-label catalog (naming it), or an empty train split; ConfigError:
                ``data.channels`` not 3 or ``model.head.num_classes`` other than the catalog's.
        """
        from fewray.data.catalog import read_columns
        from fewray.data.multi_label import check_multi_label_catalog
        from fewray.platform.errors import ConfigError, DataError

        root = cfg.data.root
        info = check_multi_label_catalog(root)
        if cfg.data.channels != 3:
            raise ConfigError(f"data.channels={cfg.data.channels}: a multi-label catalog holds RGB images (3)")
        given, have = cfg.model.head.get("num_classes"), info.get("num_classes")
        if given is not None and have is not None and int(given) != int(have):
            raise ConfigError(f"model.head.num_classes is {given} but the multi-label catalog {root} has {have} "
                              f"classes")
        if read_columns(f"{root.rstrip('/')}/train.parquet", ["labels"]).num_rows == 0:
            raise DataError(f"the train split of {root} has no images")

    def check_val_data(self, cfg) -> None:
        """``val.split`` must be a split of the multi-label catalog with images.

        Raises:
            DataError: a missing split (naming those there are), or an empty one.
        """
        from fewray.data.catalog import _split_path, read_columns
        from fewray.platform.errors import DataError

        path = _split_path(cfg.data.root, cfg.val.split)
        if read_columns(path, ["labels"]).num_rows == 0:
            raise DataError(f"the {cfg.val.split} split of {cfg.data.root} has no images: validation needs some")

    def model_inputs(self, batch) -> dict[str, Any]:
        """Images (floats in [0, 1]) ``(B, C, H, W)`` and float targets ``(B, num_classes)`` (1, 0, -1 ignored)."""
        from fewray.platform.features import to_float

        return {"img": to_float(batch["img"][0]), "gt_label": batch["gt_label"][0].float()}

    def validator(self, cfg):
        """:class:`MultiLabelValidator` of ``val.split``."""
        return MultiLabelValidator(cfg)

    def val_line(self, val: dict[str, float]) -> str:
        """``validation mAP 61.23, CF1 40.00, OF1 55.50``."""
        return "validation " + ", ".join(f"{k} {val[k]:.2f}" for k in self.summary_metrics)
