"""Self-supervised pre-training's training task: two augmented views of each image of a labelled split, labels
unused (SimCLR). Meta-validation evaluates the backbone with prototypes (a frozen-feature ProtoNet).

Example::

    >>> import torch
    >>> from fewray.tasks import TASKS
    >>> row = {"view1": torch.zeros(1, 4, 1, 28, 28, dtype=torch.uint8),
    ...        "view2": torch.zeros(1, 4, 1, 28, 28, dtype=torch.uint8)}
    >>> views = TASKS.get("multiview")().model_inputs(row)["inputs"]
    >>> len(views), views[0].shape, views[0].dtype
    (2, torch.Size([4, 1, 28, 28]), torch.float32)
"""

from __future__ import annotations

from typing import Any

from fewray.tasks.base import TASKS, TrainingTask


@TASKS.register(name="multiview")
class MultiViewTask(TrainingTask):
    """Batches of ``train.batch_size`` images as two augmented views: ``model(mode="train", inputs=[view1, view2])``
    (SimCLR: the views are made in the Ray Data stream, seeded by ``(seed, batch id)``)."""

    rate_name = "batches_per_second"

    def dataset(self, cfg, start, stop):
        """Two-view batches ``start..stop-1`` of the train split (:func:`fewray.platform.streaming.multiview_dataset`)."""
        from fewray.platform.streaming import multiview_dataset

        t, d = cfg.train, cfg.data
        return multiview_dataset(d.root, "train", d.channels, t.batch_size, cfg.seed, start=start, stop=stop,
                                 image_size=d.image_size)

    def check_data(self, cfg) -> None:
        """The train split must hold images, a batch at least 2 (the contrastive loss needs negatives), and the
        views are this task's augmentation (``data.augment`` must be ``none``).

        Raises:
            DataError: an empty train split; ConfigError: ``train.batch_size`` < 2 or another ``data.augment``.
        """
        from fewray.data.catalog import read_labels
        from fewray.platform.errors import ConfigError, DataError

        if cfg.train.batch_size < 2:
            raise ConfigError(f"train.batch_size={cfg.train.batch_size}: contrastive pre-training needs at least 2 "
                              f"images per batch (the other images are the negatives)")
        if cfg.data.augment != "none":
            raise ConfigError(f"data.augment={cfg.data.augment!r}: the two views are made by the multi-view stream "
                              f"(SimCLR's augmentation); leave data.augment as 'none'")
        if len(read_labels(cfg.data.root, "train")) == 0:
            raise DataError(f"the train split of {cfg.data.root} has no images")

    def model_inputs(self, batch) -> dict[str, Any]:
        """The two views as floats in [0, 1], each ``(B, C, H, W)``."""
        from fewray.platform.features import to_float

        return {"inputs": [to_float(batch["view1"][0]), to_float(batch["view2"][0])]}

    def eval_model(self, model):
        """A ProtoNet on the model's (frozen) backbone: meta-validation measures the features few-shot."""
        from fewray.algorithms import CLASSIFIERS, HEADS

        return CLASSIFIERS.build({"type": "ProtoNet"}, "model", backbone=model.backbone,
                                 head=HEADS.build({"type": "PrototypeHead"}, "model.head")).eval()
