"""Shared pieces of the dataset sources: image conversion, a restricted unpickler, the catalog writer.

Every source turns an official release into the same Parquet catalog (see
:mod:`fewray.data.catalog`): ``train``/``val``/``test`` tables with ``image`` (encoded bytes of
a ``size x size`` RGB image), ``label`` (``0..C-1`` within the split), ``class_name`` and source-specific
columns, plus ``catalog.json``. A source only has to say which classes go to which split and where each
image comes from; :func:`write_class_catalog` does the rest, atomically.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fewray.data.catalog import (
    check_output_dir,  # noqa: F401 - re-exported: every source checks its --out first
    publish_atomically,
    to_8bit,
    write_catalog_info,
    write_split,
)
from fewray.core.errors import DataError

SPLITS = ("train", "val", "test")
RESIZE_MODES = ("stretch", "center_crop")
IMAGE_FORMATS = ("png", "jpeg")
#: file name endings read as images by the folder-based sources (case-insensitive)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def resize_image(img: Image.Image, size: int, mode: str = "stretch", where: str = "image") -> Image.Image:
    """An RGB ``size x size`` copy of ``img`` (grayscale, palette, CMYK and alpha images become RGB).

    16-bit and 32-bit images (``I;16``, ``I``, ``F``) are first scaled to 8 bits by
    :func:`~fewray.data.catalog.to_8bit` (PIL's own conversion would clip them to white).

    Args:
        img: any PIL image.
        size: output side in pixels.
        mode: ``"stretch"`` resizes the whole image to ``size x size`` (aspect ratio not kept; the
            preprocessing of Ravi & Larochelle's 84x84 mini-ImageNet), ``"center_crop"`` resizes the shorter
            side to ``size`` and cuts the central square (aspect ratio kept, borders of long sides lost).
        where: how error messages name the image.

    Raises:
        DataError: an unknown ``mode``, or :func:`~fewray.data.catalog.to_8bit`'s errors (an empty
            image, 32-bit values outside 0..65535).

    Resampling is Lanczos (antialiased), as for the Omniglot catalog; done with
    ``torchvision.transforms.v2.functional`` (``resize``, ``center_crop``: mmfewshot's test pipeline for
    ``center_crop``), which on PIL images calls PIL's own resampling.
    """
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    if mode not in RESIZE_MODES:
        raise DataError(f"unknown resize mode '{mode}' (choose from {', '.join(RESIZE_MODES)})")
    img = to_8bit(img, where).convert("RGB")
    if img.size == (size, size):
        return img
    if mode == "center_crop":
        return TF.center_crop(TF.resize(img, size, interpolation=InterpolationMode.LANCZOS), [size, size])
    return TF.resize(img, [size, size], interpolation=InterpolationMode.LANCZOS)


def encode_image(img: Image.Image, fmt: str = "png", quality: int = 95) -> bytes:
    """Encoded bytes of ``img``: lossless PNG (default) or JPEG at ``quality`` (about 2.5x smaller at 84x84)."""
    buf = io.BytesIO()
    if fmt == "png":
        img.save(buf, format="PNG", optimize=False)
    elif fmt == "jpeg":
        img.save(buf, format="JPEG", quality=quality)
    else:
        raise DataError(f"unknown image format '{fmt}' (choose from {', '.join(IMAGE_FORMATS)})")
    return buf.getvalue()


def open_image(src: str | Path | bytes | np.ndarray, where: str) -> Image.Image:
    """Open an image from a path, encoded bytes or an ``(H, W[, C])`` uint8 array, fully decoded, 8-bit.

    Images with wider samples (16-bit ``I;16``, 32-bit ``I``/``F``) are scaled to 8 bits by
    :func:`~fewray.data.catalog.to_8bit` (the rule is documented there).

    Args:
        src: a file path, encoded image bytes, or a uint8 array ``(H, W)`` / ``(H, W, 3|4)``.
        where: how error messages name the image (its path, ``train_images_png.pkl[17]``).

    Raises:
        DataError: ``image file not found: <where>``, ``cannot read image <where>: ...`` for a truncated or
            non-image file or an array that is not uint8, ``empty image: <where> has size 0x0``, or 32-bit
            values that fit no 8-bit rule.
    """
    try:
        if isinstance(src, np.ndarray):
            if src.dtype != np.uint8 or src.ndim not in (2, 3):
                raise ValueError(f"expected an (H, W[, C]) uint8 array, got {src.dtype} {src.shape}")
            img = Image.fromarray(src)
        elif isinstance(src, (bytes, bytearray, memoryview)):
            img = Image.open(io.BytesIO(bytes(src)))
        else:
            img = Image.open(src)
        img.load()
    except FileNotFoundError:
        raise DataError(f"image file not found: {where}") from None
    except Exception as exc:  # noqa: BLE001 - PIL raises several types for corrupt data
        raise DataError(f"cannot read image {where}: {type(exc).__name__}: {' '.join(str(exc).split())[:160]}") from None
    return to_8bit(img, where)


def require_dir(path: Path, what: str) -> Path:
    """``path`` if it is a directory, else ``DataError('<what> not found: <path>')``."""
    if not path.is_dir():
        raise DataError(f"{what} not found: {path}")
    return path


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a file, else ``DataError('<what> not found: <path>')``."""
    if not path.is_file():
        raise DataError(f"{what} not found: {path}")
    return path


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can only rebuild builtin containers and numpy arrays (no arbitrary callables)."""

    ALLOWED = frozenset({
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "bytearray"), ("builtins", "complex"),
        ("_codecs", "encode"),  # how Python 3 writes bytes in protocol 2 pickles
    })
    # numpy's dtype classes (numpy.dtypes.UInt8DType, ...) are looked up by numpy 2 pickles
    ALLOWED_MODULE_PREFIXES = ("numpy.dtypes",)

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED or (module.startswith(self.ALLOWED_MODULE_PREFIXES) and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays and builtin types are allowed)")


def restricted_pickle_load(path: Path, encoding: str = "bytes") -> Any:
    """Load a pickle file of the official releases (CIFAR-100, tiered-ImageNet) without running code.

    ``pickle`` can call any importable function while loading, so a plain ``pickle.load`` of a downloaded
    file is unsafe. This loader's ``find_class`` allows only numpy array/dtype/scalar reconstruction and a
    few builtin types; anything else (``os.system``, ``builtins.eval``, custom classes) stops the load.

    Args:
        path: the pickle file.
        encoding: how Python 2 ``str`` objects are decoded (``"bytes"`` keeps them as ``bytes``: the
            CIFAR-100 dict keys are then ``b"data"``, ...; ``"latin1"`` gives ``str``).

    Raises:
        DataError: missing file, truncated/corrupt pickle, or a pickle that needs a forbidden callable.
    """
    require_file(path, "pickle file")
    try:
        with open(path, "rb") as fh:
            return _RestrictedUnpickler(fh, encoding=encoding).load()
    except pickle.UnpicklingError as exc:
        raise DataError(f"cannot load pickle {path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - EOFError, ValueError, TypeError, ... for damaged files
        raise DataError(f"cannot load pickle {path}: {type(exc).__name__}: {' '.join(str(exc).split())[:160]}") from None


def as_str(x: Any) -> str:
    """``x`` as ``str`` (pickles written by Python 2 hold ``bytes`` names)."""
    return x.decode("utf-8", "replace") if isinstance(x, (bytes, bytearray)) else str(x)


def check_split_classes(splits: dict[str, Sequence[str]], known: Iterable[str], listing: str,
                        allow_empty: bool = False) -> None:
    """Every split class must be a known class and belong to one split only.

    Args:
        allow_empty: a split may list no classes (it is then not written), as long as one split lists some.

    Raises:
        DataError: ``unknown class 'X' in split 'val' of <listing>``, a class listed in two splits, a split
            without classes (unless ``allow_empty``), no class in any split.
    """
    known = set(known)
    seen: dict[str, str] = {}
    for split, names in splits.items():
        for name in names:
            if name not in known:
                raise DataError(f"unknown class '{name}' in split '{split}' of {listing}")
            if name in seen:
                raise DataError(f"class '{name}' is in both split '{seen[name]}' and split '{split}' of {listing}")
            seen[name] = split
        if not names and not allow_empty:
            raise DataError(f"split '{split}' of {listing} lists no classes")
    if not seen:
        raise DataError(f"{listing} lists no classes")


def check_image_options(image_size: int, resize_mode: str, image_format: str) -> None:
    """The stored images' options, checked before any image is read.

    Raises:
        DataError: ``image_size`` below 8 pixels, an unknown ``resize_mode`` or ``image_format``.
    """
    if image_size < 8:
        raise DataError(f"image size {image_size} is too small (at least 8 pixels)")
    if resize_mode not in RESIZE_MODES:
        raise DataError(f"unknown resize mode '{resize_mode}' (choose from {', '.join(RESIZE_MODES)})")
    if image_format not in IMAGE_FORMATS:
        raise DataError(f"unknown image format '{image_format}' (choose from {', '.join(IMAGE_FORMATS)})")


def write_class_catalog(
    out: str | Path,
    info: dict[str, Any],
    splits: dict[str, list[tuple[str, list[Any]]]],
    load: Callable[[Any], tuple[Image.Image, dict[str, Any]]],
    image_size: int,
    resize_mode: str = "stretch",
    image_format: str = "png",
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write a catalog from a class split, atomically (see :func:`~fewray.data.catalog.publish_atomically`).

    Args:
        out: catalog directory.
        info: dataset-level entries of ``catalog.json`` (``dataset``, ``protocol``, ...); ``image_size``,
            ``channels``, ``resize_mode``, ``image_format`` and per-split counts are added.
        splits: ``{split: [(class_name, [item, ...]), ...]}``; the class at position ``i`` gets label ``i``. Only
            the splits given, with classes, are written (a catalog may hold only a test split); ``catalog.json``'s
            ``splits`` lists them.
        load: ``load(item) -> (PIL image, extra columns)``; raises :class:`DataError` naming the item.
        image_size: output side; resize_mode: see :func:`resize_image`; image_format: ``png`` or ``jpeg``.
        progress: called with 1 after each image.

    Returns:
        The ``catalog.json`` dict.

    Raises:
        DataError: ``out`` may not be replaced (see :func:`~fewray.data.catalog.check_output_dir`),
            an empty class (naming it), no split with classes, or whatever ``load`` raises. Nothing is written to
            ``out`` then.
    """
    check_image_options(image_size, resize_mode, image_format)
    splits = {split: classes for split, classes in splits.items() if classes}  # splits without classes: not written
    if not splits:
        raise DataError("no split has any class: nothing to write")
    for split, classes in splits.items():
        for name, items in classes:
            if not items:
                raise DataError(f"empty class '{name}' (split '{split}'): it has no images")
    info = {**info, "image_size": image_size, "channels": 3, "resize_mode": resize_mode,
            "image_format": image_format, "splits": {}}
    with publish_atomically(out) as tmp:
        for split, classes in splits.items():
            cols: dict[str, list] = {"image": [], "label": [], "class_name": []}
            for label, (name, items) in enumerate(classes):
                for k, item in enumerate(items):
                    img, extra = load(item)
                    where = f"#{k} of class '{name}' (split '{split}')"
                    cols["image"].append(encode_image(resize_image(img, image_size, resize_mode, where), image_format))
                    cols["label"].append(label)
                    cols["class_name"].append(name)
                    for k, v in extra.items():
                        cols.setdefault(k, []).append(v)
                    if progress:
                        progress(1)
            write_split(tmp, split, cols)
            counts = [len(items) for _, items in classes]
            info["splits"][split] = {"classes": len(classes), "images": sum(counts),
                                     "min_images_per_class": min(counts), "max_images_per_class": max(counts)}
        write_catalog_info(tmp, info)
    return info
