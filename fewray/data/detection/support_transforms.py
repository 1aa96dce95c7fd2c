"""Support pipelines of the query-support detectors: one annotated instance -> one fixed-size support image.

mmfewshot's names and defaults (``mmfewshot/detection/datasets/pipelines/transforms.py``):

- :class:`CropResizeInstance` (Attention-RPN, FSDetView): a square around the box with ``num_context_pixels`` of
  context, resized to ``target_size``;
- :class:`GenerateMask` (Meta R-CNN, FSDetView): the image resized to ``target_size`` and the box as a 4th channel
  (Meta R-CNN's "predictor-head remodeling network" input, https://arxiv.org/abs/1909.13032).

A pipeline is a list of these configs (``data.query_support.support_pipeline``), applied in order by
:func:`build_support_pipeline`; images are uint8 ``(C, H, W)`` numpy arrays, boxes ``(4,)`` x1, y1, x2, y2 in
pixels of the image they come with.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from fewray.core.errors import ConfigError


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import torch
    from torchvision.transforms.v2 import functional as F

    return F.resize(torch.from_numpy(np.ascontiguousarray(image)), list(size), antialias=True).numpy()


class CropResizeInstance:
    """Crop one instance with context and resize it: mmfewshot's ``CropResizeInstance``.

    The crop is the square of side ``max(box w, box h) + 2 * num_context_pixels`` centred on the box; the parts of
    it outside the image are zeros (mmfewshot shifts the window at a border instead; both keep the box whole and
    square-padded). The square is resized to ``target_size x target_size``.

    Args:
        num_context_pixels (int): context around the box, in the image's pixels (>= 0). Default 16.
        target_size (int | tuple[int, int]): the output side (a square; a pair must be equal). Default 320.

    ``__call__(image (C, H, W) uint8, box (4,))`` -> ``(image (C, T, T) uint8, box (4,) float32)`` with the box in
    the output's pixels.

    Raises:
        ConfigError: a negative context, a non-square or non-positive target size.

    Example::

        >>> img = np.zeros((3, 100, 200), np.uint8); img[:, 40:60, 50:90] = 255
        >>> out, box = CropResizeInstance(num_context_pixels=10, target_size=60)(img, np.array([50., 40., 90., 60.]))
        >>> out.shape, box.tolist()                   # a 60 x 60 square: 40 + 2 * 10 px wide, scale 1
        ((3, 60, 60), [10.0, 20.0, 50.0, 40.0])
        >>> int(out[0, 30, 30]), int(out[0, 5, 30])  # the instance, and context above it
        (255, 0)
    """

    def __init__(self, num_context_pixels: int = 16, target_size: int | tuple[int, int] | list[int] = 320) -> None:
        self.num_context_pixels = int(num_context_pixels)
        self.target_size = _square(target_size, "CropResizeInstance")
        if self.num_context_pixels < 0:
            raise ConfigError(f"CropResizeInstance.num_context_pixels must be >= 0, got {num_context_pixels}")

    def __call__(self, image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        _, h, w = image.shape
        x1, y1, x2, y2 = (float(v) for v in box)
        side = max(1, int(round(max(x2 - x1, y2 - y1))) + 2 * self.num_context_pixels)
        wx = int(round((x1 + x2) / 2 - side / 2))
        wy = int(round((y1 + y2) / 2 - side / 2))
        square = np.zeros((image.shape[0], side, side), np.uint8)
        sx0, sy0, sx1, sy1 = max(wx, 0), max(wy, 0), min(wx + side, w), min(wy + side, h)
        if sx1 > sx0 and sy1 > sy0:
            square[:, sy0 - wy:sy1 - wy, sx0 - wx:sx1 - wx] = image[:, sy0:sy1, sx0:sx1]
        scale = self.target_size / side
        out = _resize(square, (self.target_size, self.target_size))
        new_box = np.array([(x1 - wx) * scale, (y1 - wy) * scale, (x2 - wx) * scale, (y2 - wy) * scale], np.float32)
        return out, np.clip(new_box, 0, self.target_size)


class GenerateMask:
    """Resize the support image to ``target_size`` (aspect ratio not kept) and add its box as a 4th channel:
    mmfewshot's ``GenerateMask`` (Meta R-CNN's support input: RGB plus a 0 / 255 box mask).

    Args:
        target_size (int | tuple[int, int]): the output side (a square). Default 224.

    ``__call__(image (3, H, W) uint8, box (4,))`` -> ``(image (4, T, T) uint8, box (4,) float32)``.

    Raises:
        ConfigError: a non-square or non-positive target size.

    Example::

        >>> out, box = GenerateMask(target_size=50)(np.zeros((3, 100, 200), np.uint8), np.array([0., 0., 100., 50.]))
        >>> out.shape, box.tolist(), int(out[3].sum() // 255)   # the mask: 25 x 25 pixels
        ((4, 50, 50), [0.0, 0.0, 25.0, 25.0], 625)
    """

    def __init__(self, target_size: int | tuple[int, int] | list[int] = 224) -> None:
        self.target_size = _square(target_size, "GenerateMask")

    def __call__(self, image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        _, h, w = image.shape
        t = self.target_size
        out = _resize(image, (t, t))
        sx, sy = t / w, t / h
        new_box = np.clip(np.array([box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy], np.float32), 0, t)
        mask = np.zeros((1, t, t), np.uint8)
        mask[0, int(new_box[1]):int(new_box[3]), int(new_box[0]):int(new_box[2])] = 255
        return np.concatenate([out, mask]), new_box


def _square(size: Any, where: str) -> int:
    sizes = [int(s) for s in size] if isinstance(size, (list, tuple)) else [int(size)]
    if len(set(sizes)) != 1 or sizes[0] < 1:
        raise ConfigError(f"{where}.target_size must be one positive side (a square), got {size}")
    return sizes[0]


#: ``type:`` -> support transform class
SUPPORT_TRANSFORMS: dict[str, type] = {"CropResizeInstance": CropResizeInstance, "GenerateMask": GenerateMask}


def build_support_pipeline(cfgs: list[dict[str, Any]]) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The support pipeline of ``data.query_support.support_pipeline``: ``f(image (3, H, W) uint8, box (4,))`` ->
    the support image ``(C, T, T)`` uint8 (C = 4 after a ``GenerateMask``).

    Raises:
        ConfigError: an empty list, an unknown ``type`` (naming the known ones) or argument, or a pipeline whose
            last step does not give a fixed size.

    Example::

        >>> f = build_support_pipeline([{"type": "CropResizeInstance", "num_context_pixels": 16, "target_size": 64},
        ...                             {"type": "GenerateMask", "target_size": 64}])
        >>> f(np.zeros((3, 90, 120), np.uint8), np.array([10., 10., 50., 30.])).shape
        (4, 64, 64)
        >>> build_support_pipeline([{"type": "Resize"}])
        Traceback (most recent call last):
        fewray.core.errors.ConfigError: data.query_support.support_pipeline: unknown type 'Resize' (CropResizeInstance, GenerateMask)
    """
    if not cfgs:
        raise ConfigError("data.query_support.support_pipeline is empty: give CropResizeInstance and/or GenerateMask")
    steps = []
    for cfg in cfgs:
        cfg = dict(cfg)
        kind = cfg.pop("type", None)
        if kind not in SUPPORT_TRANSFORMS:
            raise ConfigError(f"data.query_support.support_pipeline: unknown type {kind!r} "
                              f"({', '.join(SUPPORT_TRANSFORMS)})")
        try:
            steps.append(SUPPORT_TRANSFORMS[kind](**cfg))
        except TypeError as exc:
            raise ConfigError(f"data.query_support.support_pipeline: {kind}: {exc}") from None

    def apply(image: np.ndarray, box: np.ndarray) -> np.ndarray:
        for step in steps:
            image, box = step(image, box)
        return image

    return apply


def support_channels(cfgs: list[dict[str, Any]]) -> int:
    """Channels of the pipeline's support images: 4 with a ``GenerateMask``, else 3.

    Example::

        >>> support_channels([{"type": "CropResizeInstance"}]), support_channels([{"type": "GenerateMask"}])
        (3, 4)
    """
    return 4 if any(c.get("type") == "GenerateMask" for c in cfgs) else 3


def support_size(cfgs: list[dict[str, Any]]) -> int:
    """The side of the pipeline's support images (its last step's ``target_size``).

    Example::

        >>> support_size([{"type": "CropResizeInstance", "target_size": 96}, {"type": "GenerateMask", "target_size": 64}])
        64
    """
    last = dict(cfgs[-1])
    kind = last.pop("type")
    return SUPPORT_TRANSFORMS[kind](**last).target_size
