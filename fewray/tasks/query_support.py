"""The query-support detectors' training task: detection batches with support instances, validated after
``model_init``.

The detection task's stream, catalog checks and COCO AP validation, with ``data.query_support``
(:class:`~fewray.platform.config.QuerySupportConfig`): every step's row holds its supports
(:class:`~fewray.data.detection.training.QuerySupportStepBuilder`), the model's training call takes them
(``support_images``, ``support_labels``, ``query_class``), and before each validation the model averages the class
vectors of the training set's support instances (``model_init``,
:func:`~fewray.data.detection.training.model_init_supports`), so a checkpoint carries them.

Example::

    >>> import torch
    >>> from fewray.tasks import TASKS
    >>> row = {"img": torch.zeros(1, 1, 3, 8, 8, dtype=torch.uint8), "img_hw": torch.tensor([[[8, 8]]]),
    ...        "boxes": torch.tensor([[[[1., 1., 3., 3.]]]]), "labels": torch.tensor([[[0]]]),
    ...        "support_img": torch.full((1, 1, 2, 4, 6, 6), 255, dtype=torch.uint8),
    ...        "support_labels": torch.tensor([[[0, 1]]]), "query_class": torch.tensor([[0]])}
    >>> inputs = TASKS.get("query_support_detection")().model_inputs(row)
    >>> tuple(inputs["support_images"].shape), float(inputs["support_images"].max()), inputs["query_class"].tolist()
    ((1, 2, 4, 6, 6), 1.0, [0])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from fewray.tasks.base import TASKS
from fewray.tasks.detection import DetectionTask, DetectionValidator

if TYPE_CHECKING:
    import torch

    from fewray.platform.config import ExperimentConfig


def query_support_section(cfg: "ExperimentConfig"):
    """``data.query_support`` (the default section when the config has none)."""
    from fewray.platform.config import QuerySupportConfig

    return cfg.data.query_support or QuerySupportConfig()


def init_supports(cfg: "ExperimentConfig") -> tuple[np.ndarray, np.ndarray]:
    """The model-init support images and labels of a config (:func:`~fewray.data.detection.training.
    model_init_supports` of ``data.root``, ``data.classes``, ``data.few_shot``, ``data.query_support``)."""
    from fewray.data.detection.training import model_init_supports

    d = cfg.data
    return model_init_supports(d.root, d.classes, d.few_shot.model_dump() if d.few_shot else None,
                               query_support_section(cfg).dataset_options())


def run_model_init(model: "torch.nn.Module", images: np.ndarray, labels: np.ndarray, device: Any = "cpu") -> list[str]:
    """``model.model_init`` on uint8 support images ``(N, C, T, T)`` (floats in [0, 1] on ``device``); returns the
    classes with a class vector."""
    import torch

    return model.model_init(torch.from_numpy(images).to(device).float().div_(255.0),
                            torch.from_numpy(labels).to(device))


class QuerySupportValidator(DetectionValidator):
    """:class:`~fewray.tasks.detection.DetectionValidator` after ``model_init`` on the training set's supports
    (decoded once, on rank 0).

    Example::

        >>> from fewray.data.detection.training import example_catalog
        >>> from fewray.platform.config import load_config
        >>> cfg = load_config("configs/detection/meta_rcnn/lite0_fpn_coco_base_training.yaml",
        ...     [f"data.root={example_catalog()}", "data.classes=ALL_CLASSES", "val.split=test",
        ...      "data.query_support.num_used_support_shots=2"])
        >>> QuerySupportValidator(cfg).support_labels.tolist()
        [0, 0, 1, 1, 2, 2]
    """

    def __init__(self, cfg: "ExperimentConfig") -> None:
        super().__init__(cfg)
        self.support_images, self.support_labels = init_supports(cfg)

    def __call__(self, model: "torch.nn.Module", device: Any = "cpu") -> dict[str, float]:
        """``model_init`` then COCO AP (:data:`~fewray.tasks.detection.DET_METRICS`)."""
        run_model_init(model, self.support_images, self.support_labels, device)
        return super().__call__(model, device)


@TASKS.register(name="query_support_detection")
class QuerySupportDetectionTask(DetectionTask):
    """Query-support batches (module docstring) for ``MetaRCNN`` / ``FSDetView``: ``model(mode="train", images,
    targets, support_images, support_labels, query_class)``; validation after ``model_init``.

    Example::

        >>> from fewray.data.detection.training import example_catalog
        >>> from fewray.platform.config import load_config
        >>> cfg = load_config("configs/detection/meta_rcnn/lite0_fpn_coco_base_training.yaml",
        ...                   [f"data.root={example_catalog()}", "data.classes=ALL_CLASSES"])
        >>> QuerySupportDetectionTask().resolve_config(cfg).model.support_channels
        4
    """

    def resolve_config(self, cfg: "ExperimentConfig") -> "ExperimentConfig":
        """The detection task's, plus ``model.support_channels`` from the support pipeline (4 with
        ``GenerateMask``).

        Raises:
            ConfigError: ``model.support_channels`` given and not what the pipeline gives.
        """
        from fewray.data.detection.support_transforms import support_channels
        from fewray.tasks.detection import with_model_key

        cfg = super().resolve_config(cfg)
        channels = support_channels(query_support_section(cfg).pipeline())
        given = getattr(cfg.model, "support_channels", None)
        return with_model_key(cfg, "support_channels", channels, given is not None and int(given) != channels,
                              f"model.support_channels={given} but data.query_support.support_pipeline gives "
                              f"{channels}-channel supports ({'with' if channels == 4 else 'without'} GenerateMask)")

    def dataset(self, cfg, start, stop):
        """Query-support rows ``start..stop-1`` (:func:`fewray.platform.streaming.detection_dataset` with
        :class:`~fewray.data.detection.training.QuerySupportStepBuilder`)."""
        from fewray.data.detection.training import QuerySupportStepBuilder
        from fewray.platform.streaming import detection_dataset

        return detection_dataset(start=start, stop=stop, builder=QuerySupportStepBuilder,
                                 query_support=query_support_section(cfg).dataset_options(), **self.stream_args(cfg))

    def check_data(self, cfg) -> None:
        """The detection task's checks, then the support sets: ways and shots against the training set.

        Raises:
            DataError: as the detection task; ``num_support_ways`` above the classes, a class with fewer support
                instances than ``num_support_shots`` (naming it); ConfigError: a bad support pipeline.
        """
        from fewray.data.detection.query_support import QUERY_SUPPORT_DATASETS
        from fewray.data.detection.support_transforms import build_support_pipeline
        from fewray.data.detection.training import model_classes, training_records

        super().check_data(cfg)
        d = cfg.data
        opts = query_support_section(cfg).dataset_options()
        build_support_pipeline(opts.pop("support_pipeline"))
        records = training_records(d.root, "train", d.classes, d.few_shot.model_dump() if d.few_shot else None,
                                   with_images=False)
        QUERY_SUPPORT_DATASETS[opts.pop("type")](records, model_classes(d.root, d.classes), seed=cfg.seed, **opts)

    def model_inputs(self, batch) -> dict[str, Any]:
        """The detection task's ``images`` / ``targets`` plus ``support_images`` floats in [0, 1]
        ``(G, W*K, C, T, T)``, ``support_labels`` ``(G, W*K)`` and ``query_class`` ``(B,)``."""
        inputs = super().model_inputs(batch)
        inputs["support_images"] = batch["support_img"][0].float().div(255.0)
        inputs["support_labels"] = batch["support_labels"][0].long()
        inputs["query_class"] = batch["query_class"][0].long()
        return inputs

    def validator(self, cfg):
        """:class:`QuerySupportValidator` of ``val.split``."""
        return QuerySupportValidator(cfg)
