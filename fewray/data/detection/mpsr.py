"""MPSR's auxiliary branch data: each training step's objects cropped and resized to several scales.

Wu, Liu, Huang, Wang, "Multi-Scale Positive Sample Refinement for Few-Shot Object Detection", ECCV 2020
(https://arxiv.org/abs/2007.09384); mmfewshot's ``CropInstance`` (a square around the box, ``context_ratio`` of its
long side added, zeros outside the image) and ``ResizeToMultiScale``. A step's row is the detection batch of
:class:`~fewray.data.detection.builder.DetectionBatchBuilder` plus, for each query image, one of its objects (drawn
from ``(seed, step, i)``) at every scale of ``scales``: ``aux_img_{k}`` uint8 ``(B, 3, s_k, s_k)`` and
``aux_labels`` int64 ``(B,)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fewray.core.errors import ConfigError


class CropInstance:
    """mmfewshot's ``CropInstance``: the square of side ``max(w, h) * (1 + context_ratio)`` centred on the box,
    zero outside the image.

    Args:
        context_ratio (float): context added to the box's long side (> 0; MPSR: 1 / 7).

    ``__call__(image (C, H, W) uint8, box (4,))`` -> ``(crop (C, S, S) uint8, box (4,) in the crop's pixels)``.

    Raises:
        ConfigError: ``context_ratio <= 0``.

    Example::

        >>> img = np.full((3, 20, 40), 9, np.uint8)
        >>> crop, box = CropInstance(context_ratio=1.0)(img, np.array([10., 5., 20., 10.]))
        >>> crop.shape, box.tolist(), int(crop[0, 0, 0]), int(crop[0, 10, 10])   # 20 x 20; above the image: 0
        ((3, 20, 20), [5.0, 7.0, 15.0, 12.0], 0, 9)
    """

    def __init__(self, context_ratio: float = 1.0 / 7.0) -> None:
        if not context_ratio > 0:
            raise ConfigError(f"CropInstance.context_ratio must be > 0, got {context_ratio}")
        self.context_ratio = float(context_ratio)

    def __call__(self, image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        _, h, w = image.shape
        x1, y1, x2, y2 = (float(v) for v in box)
        side = max(1, int(max(x2 - x1, y2 - y1) * (1 + self.context_ratio)))
        ox, oy = int((x1 + x2 - side) / 2), int((y1 + y2 - side) / 2)
        crop = np.zeros((image.shape[0], side, side), np.uint8)
        sx0, sy0, sx1, sy1 = max(ox, 0), max(oy, 0), min(ox + side, w), min(oy + side, h)
        if sx1 > sx0 and sy1 > sy0:
            crop[:, sy0 - oy:sy1 - oy, sx0 - ox:sx1 - ox] = image[:, sy0:sy1, sx0:sx1]
        return crop, np.array([x1 - ox, y1 - oy, x2 - ox, y2 - oy], np.float32)


class MPSRBatchBuilder:
    """One training step's detection batch plus MPSR's multi-scale object crops, rebuilt from ``(seed, step)``.

    Args:
        records, batch_size, seed, min_size, max_size, flip: as
            :class:`~fewray.data.detection.builder.DetectionBatchBuilder` (records with image bytes).
        scales (list[int]): the auxiliary image sides (mmfewshot's MPSR: 32, 64, 128, 256, 512, 800).
        context_ratio (float): :class:`CropInstance`'s.

    Raises:
        ConfigError: no scale, a scale below 8; as the builder and :class:`CropInstance`.

    Example::

        >>> from fewray.data.detection.training import example_catalog, training_records
        >>> b = MPSRBatchBuilder(training_records(example_catalog(), "train", "ALL_CLASSES"), 2, 0, 64, 96, True,
        ...                      [16, 32])
        >>> row = b(0)
        >>> row["aux_img_0"].shape, row["aux_img_1"].shape, row["aux_labels"].shape
        ((2, 3, 16, 16), (2, 3, 32, 32), (2,))
    """

    def __init__(self, records: list[dict[str, Any]], batch_size: int, seed: int, min_size: int, max_size: int,
                 flip: bool, scales: list[int], context_ratio: float = 1.0 / 7.0) -> None:
        from fewray.data.detection.builder import DetectionBatchBuilder

        if not scales or min(int(s) for s in scales) < 8:
            raise ConfigError(f"data.mpsr.scales must be sides of at least 8 pixels, got {scales}")
        self.scales = [int(s) for s in scales]
        self.crop = CropInstance(context_ratio)
        self.queries = DetectionBatchBuilder(records, batch_size, seed, min_size=min_size, max_size=max_size,
                                             flip=flip)
        self.records, self.seed = records, int(seed)

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        """The row of step ``step`` (module docstring)."""
        import torch
        from torchvision.transforms.v2 import functional as F

        from fewray.data.detection.builder import decode_rgb

        row = self.queries(int(step))
        idx = self.queries.indices(int(step)).tolist()
        crops, labels = [], []
        for i, r in enumerate(idx):
            rec = self.records[r]
            keep = np.flatnonzero(~rec["ignore"])
            b = int(keep[np.random.default_rng([self.seed, int(step), 4, i]).integers(len(keep))])
            image = decode_rgb(rec["image"], f"{rec.get('file_name')} (image {rec['image_id']})")
            crops.append(torch.from_numpy(self.crop(image, rec["boxes"][b])[0]))
            labels.append(int(rec["labels"][b]))
        for k, s in enumerate(self.scales):
            row[f"aux_img_{k}"] = np.stack([F.resize(c, [s, s], antialias=True).numpy() for c in crops])
        row["aux_labels"] = np.array(labels, np.int64)
        return row
