"""Training batches of a detection catalog: one step's images resized, flipped and padded, with their boxes.

:class:`DetectionBatchBuilder` turns a step id into one batch (a dict of arrays with fixed shapes, as Ray Data
streams them: :mod:`fewray.platform.streaming` maps a builder over step ids). Step ``s`` holds positions
``s*B .. s*B+B-1`` of an endless sequence of epochs, epoch ``e`` being the records in the order
``default_rng([seed, e]).permutation(N)`` (:class:`~fewray.data.episodes.EpochBatchSampler`), and item ``i`` of step
``s`` is flipped when ``default_rng([seed, s, i]).random() < 0.5``: any worker rebuilds any step alone.

Resizing follows torchvision's ``GeneralizedRCNNTransform`` (Faster R-CNN's, https://pytorch.org/vision/stable/
models/faster_rcnn.html): the short side becomes ``min_size`` unless the long side would pass ``max_size``, in which
case the long side becomes ``max_size`` (aspect ratio kept). Images are pasted top-left on a zero
``max_size x max_size`` canvas (``img_hw`` says how much of it is image). The image and its boxes are transformed
together by ``torchvision.transforms.v2`` on a ``tv_tensors.Image`` and ``tv_tensors.BoundingBoxes``.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from fewray.core.errors import DataError
from fewray.data.episodes import EpochBatchSampler


def detection_size(height: int, width: int, min_size: int, max_size: int) -> tuple[tuple[int, int], float]:
    """``((new height, new width), scale)`` of the resize rule (module docstring); sides are rounded and never
    pass ``max_size``.

    Example::

        >>> detection_size(480, 640, 288, 384)   # long side limits: 640 * 0.6 = 384
        ((288, 384), 0.6)
        >>> detection_size(100, 400, 288, 384)   # 400 -> 384
        ((96, 384), 0.96)
    """
    scale = min(min_size / min(height, width), max_size / max(height, width))
    nh = min(max(1, int(round(height * scale))), max_size)
    nw = min(max(1, int(round(width * scale))), max_size)
    return (nh, nw), scale


def resize_for_detection(image: Any, min_size: int = 288, max_size: int = 384) -> tuple[Any, float]:
    """Resize one image by the detection rule (module docstring): ``(resized, scale)``.

    Args:
        image: ``torch.Tensor`` uint8 ``(3, H, W)`` (or a ``tv_tensors.Image``).
        min_size: the short side's target in pixels (default 288). max_size: the long side's limit (default 384).

    Returns:
        ``(uint8 tensor (3, h, w), scale)``: bilinear with antialiasing; ``scale`` the factor of the rule
        (the exact per-axis factors are ``h / H`` and ``w / W``, which boxes use).

    Example::

        >>> import torch
        >>> out, scale = resize_for_detection(torch.zeros(3, 480, 640, dtype=torch.uint8), 288, 384)
        >>> tuple(out.shape), scale
        ((3, 288, 384), 0.6)
    """
    from torchvision.transforms.v2 import functional as F

    (nh, nw), scale = detection_size(int(image.shape[-2]), int(image.shape[-1]), min_size, max_size)
    return F.resize(image, [nh, nw], antialias=True), scale


def decode_rgb(blob: bytes, where: str) -> np.ndarray:
    """An encoded image as ``(3, H, W)`` uint8 RGB (PIL; no EXIF rotation: boxes refer to the stored pixels).

    Raises:
        DataError: ``cannot read image WHERE: ...``.

    Example::

        >>> decode_rgb(open("../shared/data/bccd/BCCD/JPEGImages/BloodImage_00000.jpg", "rb").read(), "x").shape
        (3, 480, 640)
        >>> decode_rgb(b"not an image", "row 3")
        Traceback (most recent call last):
        fewray.core.errors.DataError: cannot read image row 3: UnidentifiedImageError: cannot identify image file <_io.BytesIO object at 0x...>
    """
    try:
        with Image.open(io.BytesIO(blob)) as img:
            return np.asarray(img.convert("RGB")).transpose(2, 0, 1).copy()
    except Exception as exc:  # noqa: BLE001 - PIL raises several types for corrupt data
        detail = " ".join(str(exc).split())[:120]
        raise DataError(f"cannot read image {where}: {type(exc).__name__}: {detail}") from None


class DetectionBatchBuilder:
    """One training step's batch of a detection split, rebuilt from ``(seed, step)`` alone (module docstring).

    Args:
        records (list[dict]): records with ``image`` bytes (:func:`~fewray.data.detection.catalog.
            read_detection_split`, after any class selection / K-shot cut).
        batch_size (int): B, images per step (>= 1). seed (int): order and flip seed.
        min_size (int): short side target (default 288). max_size (int): long side limit and canvas side
            (default 384). flip (bool): random horizontal flips, p = 0.5 (default True).
        max_boxes (int | None): box slots per image; default the most non-ignored boxes any record has (at
            least 1).

    Returns (``__call__(step_id)``): ``img`` uint8 ``(B, 3, max_size, max_size)``, ``img_hw`` int32 ``(B, 2)`` (the
    resized height, width), ``boxes`` float32 ``(B, max_boxes, 4)`` x1, y1, x2, y2 in the resized image's pixels,
    zero-padded, ``labels`` int64 ``(B, max_boxes)`` -1-padded, ``image_id`` int64 ``(B,)``. Ignore boxes (crowd,
    difficult) are not targets.

    Raises:
        DataError: no records, a record without ``image`` bytes, ``max_boxes`` below the boxes of an image (naming
            it), sizes below 1 or ``min_size > max_size``; an unreadable image, or one whose size is not its
            record's (at the step that reads it).

    Example::

        >>> from fewray.data.detection.catalog import read_detection_split  # doctest: +SKIP
        >>> records = read_detection_split("data/coco_fsdet", "train")  # doctest: +SKIP
        >>> builder = DetectionBatchBuilder(records, 4, seed=0)  # doctest: +SKIP
        >>> {k: v.shape for k, v in builder(0).items()}["img"]  # doctest: +SKIP
        (4, 3, 384, 384)
    """

    def __init__(self, records: list[dict[str, Any]], batch_size: int, seed: int, min_size: int = 288,
                 max_size: int = 384, flip: bool = True, max_boxes: int | None = None) -> None:
        if not records:
            raise DataError("no training images: the records are empty (check the classes and shots)")
        if not 1 <= int(min_size) <= int(max_size):
            raise DataError(f"min_size and max_size must satisfy 1 <= min_size <= max_size, got {min_size}, {max_size}")
        missing = next((r for r in records if not isinstance(r.get("image"), (bytes, bytearray))), None)
        if missing is not None:
            raise DataError(f"record of image {missing.get('image_id')} has no 'image' bytes: read the split with "
                            f"read_detection_split(root, split, images=True)")
        counts = [int((~r["ignore"]).sum()) for r in records]
        most = max(counts)
        if max_boxes is None:
            max_boxes = max(1, most)
        elif int(max_boxes) < most:
            worst = records[counts.index(most)]["image_id"]
            raise DataError(f"max_boxes={max_boxes} is less than the {most} boxes of image {worst}")
        self.records, self.batch_size, self.seed = records, int(batch_size), int(seed)
        self.min_size, self.max_size, self.flip = int(min_size), int(max_size), bool(flip)
        self.max_boxes = int(max_boxes)
        try:
            self.sampler = EpochBatchSampler(len(records), self.batch_size, self.seed)
        except ValueError as exc:
            raise DataError(f"batch_size must be >= 1, got {batch_size}") from exc

    def indices(self, step_id: int) -> np.ndarray:
        """Record indices ``(B,)`` of step ``step_id``."""
        return self.sampler.indices(step_id)

    def item(self, rec: dict[str, Any], flip: bool) -> tuple[np.ndarray, tuple[int, int], np.ndarray, np.ndarray]:
        """One record resized (and flipped): ``(image (3, h, w) uint8, (h, w), boxes (m, 4), labels (m,))``."""
        import torch
        from torchvision import tv_tensors
        from torchvision.transforms.v2 import functional as F

        pixels = decode_rgb(rec["image"], f"{rec.get('file_name')} (image {rec['image_id']})")
        if pixels.shape[1:] != (rec["height"], rec["width"]):
            raise DataError(f"image {rec['image_id']} ({rec.get('file_name')}) is {pixels.shape[2]}x{pixels.shape[1]} "
                            f"pixels but its record says {rec['width']}x{rec['height']}")
        keep = ~rec["ignore"]
        img = tv_tensors.Image(torch.from_numpy(pixels))
        boxes = tv_tensors.BoundingBoxes(torch.from_numpy(rec["boxes"][keep].astype(np.float32)), format="XYXY",
                                         canvas_size=(rec["height"], rec["width"]))
        (nh, nw), _ = detection_size(rec["height"], rec["width"], self.min_size, self.max_size)
        img, boxes = F.resize(img, [nh, nw], antialias=True), F.resize(boxes, [nh, nw])
        if flip:
            img, boxes = F.horizontal_flip(img), F.horizontal_flip(boxes)
        return img.numpy(), (nh, nw), boxes.numpy().astype(np.float32), rec["labels"][keep]

    def __call__(self, step_id: int) -> dict[str, np.ndarray]:
        """The batch of step ``step_id`` (class docstring)."""
        b, s, m = self.batch_size, self.max_size, self.max_boxes
        out = {"img": np.zeros((b, 3, s, s), np.uint8), "img_hw": np.zeros((b, 2), np.int32),
               "boxes": np.zeros((b, m, 4), np.float32), "labels": np.full((b, m), -1, np.int64),
               "image_id": np.zeros(b, np.int64)}
        for i, idx in enumerate(self.indices(int(step_id)).tolist()):
            rec = self.records[idx]
            flip = self.flip and np.random.default_rng([self.seed, int(step_id), i]).random() < 0.5
            img, (h, w), boxes, labels = self.item(rec, flip)
            out["img"][i, :, :h, :w] = img
            out["img_hw"][i] = (h, w)
            out["boxes"][i, :len(boxes)] = boxes
            out["labels"][i, :len(labels)] = labels
            out["image_id"][i] = rec["image_id"]
        return out
