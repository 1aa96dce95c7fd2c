"""One image file or in-memory image as a model sees it: ``(C, S, S)`` uint8, converted and resized as the catalogs
are built. Used by the inference APIs (:mod:`fewray.apis`) and by retrieval's query images.

Example::

    >>> import numpy as np
    >>> load_image(np.zeros((40, 30), dtype=np.uint8), image_size=28, channels=1).shape
    (1, 28, 28)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fewray.core.errors import DataError
from fewray.data.catalog import to_8bit
from fewray.data.sources._common import open_image

ImageLike = Any  # str | Path | PIL.Image.Image | np.ndarray (H, W[, C]) uint8


def describe_image(img: ImageLike) -> str:
    """How an in-memory image is named in error messages."""
    if isinstance(img, np.ndarray):
        return f"array of shape {img.shape}"
    if isinstance(img, Image.Image):
        return f"PIL image of mode {img.mode} and size {img.width}x{img.height}"
    return type(img).__name__


def load_image(img: ImageLike, image_size: int | None, channels: int = 3, where: str | None = None) -> np.ndarray:
    """One image as the model sees it: ``(C, H, W)`` uint8 with ``H = W = image_size``.

    Args:
        img: a file path, a PIL image, or a uint8 array ``(H, W)`` (grayscale) / ``(H, W, 3|4)``. Images of
            16-bit (``I;16``) or 32-bit (``I``, ``F``) samples are scaled to 8 bits by
            :func:`~fewray.data.catalog.to_8bit` (16-bit: ``value >> 8``), not clipped.
        image_size: output side; the image is resized (Lanczos, aspect ratio not kept) when it differs; None: kept
            at its own size (detection: the detector resizes it itself).
        channels: 1 (grayscale, PIL mode ``L``) or 3 (``RGB``).
        where: how error messages name the image (default: its path, or its type and shape).

    Raises:
        DataError: a missing or unreadable file (naming it), an array that is not uint8 ``(H, W[, C])``,
            an empty image (width or height 0), 32-bit values outside 0..65535.
    """
    if isinstance(img, (str, Path)):
        pil = open_image(Path(img).expanduser(), where or str(img))
    elif isinstance(img, Image.Image):
        pil = to_8bit(img, where or describe_image(img))
    elif isinstance(img, np.ndarray):
        arr = img[..., 0] if img.ndim == 3 and img.shape[-1] == 1 else img
        pil = open_image(np.ascontiguousarray(arr), where or describe_image(img))
    else:
        raise DataError(f"expected an image path, a PIL image or a uint8 array, got {type(img).__name__}"
                        + (f" ({where})" if where else ""))
    pil = pil.convert("L" if channels == 1 else "RGB")
    if image_size is not None and pil.size != (image_size, image_size):
        pil = pil.resize((image_size, image_size), Image.LANCZOS)
    arr = np.asarray(pil, dtype=np.uint8)
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1).copy()
