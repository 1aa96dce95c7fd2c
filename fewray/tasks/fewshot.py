"""Few-shot classification's training tasks: episodes (metric and optimisation-based meta-learning) and labelled
batches of all base classes (the fine-tune baselines' pre-training).

Example::

    >>> import torch
    >>> from fewray.tasks import TASKS
    >>> row = {"img": torch.zeros(1, 4, 1, 28, 28, dtype=torch.uint8), "gt_label": torch.zeros(1, 4).long()}
    >>> inputs = TASKS.get("batches")().model_inputs(row)
    >>> inputs["img"].shape, inputs["img"].dtype
    (torch.Size([4, 1, 28, 28]), torch.float32)
"""

from __future__ import annotations

from typing import Any

from fewray.tasks.base import TASKS, TrainingTask


def _float(img):
    from fewray.platform.features import to_float

    return to_float(img)


@TASKS.register(name="episodes")
class EpisodesTask(TrainingTask):
    """N-way K-shot Q-query training episodes: ``model(mode="train", support_img, support_label, query_img,
    query_label)`` (mmfewshot's meta-training); with ``train.meta_batch_size`` each rank's share of a meta-batch
    stacked: ``support_img (k, N*K, C, H, W)``, ... (``k = meta_batch_size / num_workers``)."""

    rate_name = "episodes_per_second"
    meta_batches = True

    def items_per_step(self, cfg) -> int:
        """Episodes of one optimizer step over all workers (the meta-batch)."""
        return cfg.train.tasks_per_worker * cfg.train.num_workers

    def dataset(self, cfg, start, stop):
        """Episodes ``start..stop-1`` of the train split (:func:`fewray.platform.streaming.episode_dataset`)."""
        from fewray.platform.streaming import episode_dataset

        t, d = cfg.train, cfg.data
        return episode_dataset(d.root, "train", d.channels, t.ways, t.shots, t.queries, cfg.seed, start=start,
                               stop=stop, augment=d.augment, image_size=d.image_size,
                               tasks_per_row=t.tasks_per_worker)

    def check_data(self, cfg) -> None:
        """The train split must serve ``train.ways``-way ``train.shots + train.queries``-image episodes.

        Raises:
            DataError: too few classes, or a class with too few images (naming it).
        """
        from fewray.data.catalog import read_labels
        from fewray.data.episodes import EpisodicSampler

        t = cfg.train
        EpisodicSampler(read_labels(cfg.data.root, "train"), t.ways, t.shots, t.queries, cfg.seed, "train")

    def model_inputs(self, batch) -> dict[str, Any]:
        """Support and query images (floats in [0, 1]) and labels of one episode, or of ``k`` stacked."""
        return {"support_img": _float(batch["support_img"][0]), "support_label": batch["support_label"][0],
                "query_img": _float(batch["query_img"][0]), "query_label": batch["query_label"][0]}


@TASKS.register(name="batches")
class BatchesTask(TrainingTask):
    """Shuffled labelled batches of all base classes: ``model(mode="train", img, gt_label)`` (Baseline,
    Baseline++, NegMargin and ArcFace pre-training)."""

    rate_name = "batches_per_second"

    def dataset(self, cfg, start, stop):
        """Batches ``start..stop-1`` of ``train.batch_size`` images (:func:`fewray.platform.streaming.batch_dataset`)."""
        from fewray.platform.streaming import batch_dataset

        t, d = cfg.train, cfg.data
        return batch_dataset(d.root, "train", d.channels, t.batch_size, cfg.seed, start=start, stop=stop,
                             augment=d.augment, image_size=d.image_size)

    def check_data(self, cfg) -> None:
        """The train split must hold images.

        Raises:
            DataError: an empty train split.
        """
        from fewray.data.catalog import read_labels
        from fewray.platform.errors import DataError

        if len(read_labels(cfg.data.root, "train")) == 0:
            raise DataError(f"the train split of {cfg.data.root} has no images")

    def model_inputs(self, batch) -> dict[str, Any]:
        """Images (floats in [0, 1]) ``(B, C, H, W)`` and labels ``(B,)``."""
        return {"img": _float(batch["img"][0]), "gt_label": batch["gt_label"][0]}
