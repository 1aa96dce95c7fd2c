"""MPSR's training task: detection batches with multi-scale object crops (``data.mpsr``) for its auxiliary branch.

The detection task's stream, checks and COCO AP validation; each step's row also holds one object of each query
image at every scale of ``data.mpsr.scales`` (:class:`~fewray.data.detection.training.MPSRStepBuilder`), and the
training call takes them as ``aux_images`` / ``aux_labels`` (:class:`~fewray.algorithms.fewshot_det.mpsr.MPSR`).

Example::

    >>> import torch
    >>> from fewray.tasks import TASKS
    >>> row = {"img": torch.zeros(1, 1, 3, 8, 8, dtype=torch.uint8), "img_hw": torch.tensor([[[8, 8]]]),
    ...        "boxes": torch.tensor([[[[1., 1., 3., 3.]]]]), "labels": torch.tensor([[[0]]]),
    ...        "aux_img_0": torch.full((1, 1, 3, 16, 16), 255, dtype=torch.uint8), "aux_labels": torch.tensor([[0]])}
    >>> inputs = TASKS.get("mpsr_detection")().model_inputs(row)
    >>> [tuple(a.shape) for a in inputs["aux_images"]], float(inputs["aux_images"][0].max())
    ([(1, 3, 16, 16)], 1.0)
"""

from __future__ import annotations

from typing import Any

from fewray.tasks.base import TASKS
from fewray.tasks.detection import DetectionTask


@TASKS.register(name="mpsr_detection")
class MPSRDetectionTask(DetectionTask):
    """Detection batches plus MPSR's crops (module docstring); validated as the detection task.

    Example::

        >>> from fewray.data.detection.training import example_catalog
        >>> from fewray.platform.config import load_config
        >>> cfg = load_config("configs/detection/mpsr/lite0_fpn_coco_base_training.yaml",
        ...                   [f"data.root={example_catalog()}", "data.classes=ALL_CLASSES"])
        >>> MPSRDetectionTask().mpsr_section(cfg).scales
        [32, 64, 128]
    """

    @staticmethod
    def mpsr_section(cfg):
        """``data.mpsr`` (the default section when the config has none)."""
        from fewray.platform.config import MPSRDataConfig

        return cfg.data.mpsr or MPSRDataConfig()

    def check_data(self, cfg) -> None:
        """The detection task's checks, and one select level per scale.

        Raises:
            ConfigError: ``data.mpsr.scales`` and ``model.rpn_select_levels`` of different lengths.
        """
        from fewray.platform.errors import ConfigError

        super().check_data(cfg)
        scales = self.mpsr_section(cfg).scales
        levels = getattr(cfg.model, "rpn_select_levels", None)
        if levels is not None and len(levels) != len(scales):
            raise ConfigError(f"data.mpsr.scales has {len(scales)} scales but model.rpn_select_levels "
                              f"{len(levels)} levels: one level per scale")

    def dataset(self, cfg, start, stop):
        """Rows ``start..stop-1`` with the crops (:func:`fewray.platform.streaming.detection_dataset` with
        :class:`~fewray.data.detection.training.MPSRStepBuilder`)."""
        from fewray.data.detection.training import MPSRStepBuilder
        from fewray.platform.streaming import detection_dataset

        m = self.mpsr_section(cfg)
        return detection_dataset(start=start, stop=stop, builder=MPSRStepBuilder, scales=list(m.scales),
                                 context_ratio=m.context_ratio, **self.stream_args(cfg))

    def model_inputs(self, batch) -> dict[str, Any]:
        """The detection task's ``images`` / ``targets`` plus ``aux_images`` (one ``(B, 3, s, s)`` float batch per
        scale, in [0, 1]) and ``aux_labels`` ``(B,)``."""
        inputs = super().model_inputs(batch)
        keys = sorted((k for k in batch if k.startswith("aux_img_")), key=lambda k: int(k.rsplit("_", 1)[1]))
        inputs["aux_images"] = [batch[k][0].float().div(255.0) for k in keys]
        inputs["aux_labels"] = batch["aux_labels"][0].long()
        return inputs
