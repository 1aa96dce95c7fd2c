"""The Parquet catalog: one table per split with encoded image bytes and labels.

Layout of a catalog directory (written by ``pipelines/prepare_data.py``)::

    ROOT/catalog.json        dataset name, image size, channels, protocol, per-split counts
    ROOT/train.parquet       columns: image (PNG bytes), label (int32, 0..C-1 within the split),
    ROOT/val.parquet                  class_name (str), plus dataset-specific columns
    ROOT/test.parquet                 (Omniglot: alphabet, character, rotation)
    ROOT/.decoded/           decoded-image cache written by :func:`load_split` (``*.npy``)

``ROOT`` may be a local path or any URI pyarrow understands (``s3://``, ``gs://``), so a
cluster can read one shared catalog.

A catalog holds only the splits it was given classes for (``prepare_data.py folder --counts 0 0 N`` writes a
test-only catalog, e.g. to evaluate a pretrained backbone); ``catalog.json``'s ``splits`` lists them, and
asking for another split is an error naming those it has (``split 'val' not found in catalog ROOT (splits:
test)``).

A directory counts as *a catalog fewray wrote* (one that ``prepare_data.py`` may replace) when its
``catalog.json`` is a JSON object with a ``dataset`` entry (every catalog fewray writes has one) and it
holds nothing else than regular ``*.parquet`` files and the ``.decoded/`` cache (regular ``*.npy`` and
``*.tmp`` files); see :func:`check_output_dir`. Any other non-empty directory is never replaced.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from fewray.core.errors import DataError

CATALOG_FILE = "catalog.json"
DECODED_DIR = ".decoded"
#: PIL modes holding 16-bit samples (``np.asarray`` gives ``uint16``)
_MODES_16BIT = ("I;16", "I;16B", "I;16L", "I;16N")


@dataclass
class SplitData:
    """A decoded split.

    Attributes:
        images (np.ndarray): ``(N, C, H, W)`` uint8.
        labels (np.ndarray): ``(N,)`` int64 class indices in ``0..num_classes-1``.
        class_names (list[str]): name of each class index.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        """Number of classes in the split."""
        return len(self.class_names)


def encode_png(img: Image.Image) -> bytes:
    """PNG bytes of a PIL image."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def to_8bit(img: Image.Image, where: str) -> Image.Image:
    """``img`` with 8-bit samples, so that ``convert("L")`` / ``convert("RGB")`` keep its contrast.

    PIL's own ``convert`` clips wider samples to 0..255 (a 16-bit photo turns almost white). The rule:

    - 8-bit modes (``1``, ``L``, ``P``, ``LA``, ``RGB``, ``RGBA``, ``CMYK``, ``YCbCr``, ...): unchanged;
    - 16-bit modes (``I;16``, ``I;16B``, ``I;16L``, ``I;16N``): ``value >> 8`` (0..65535 -> 0..255), mode ``L``;
    - ``I`` (32-bit integers) and ``F`` (32-bit floats), whose range is not fixed by the mode: when every
      value lies in 0..255 the values are kept (``F`` rounded), else when every value lies in 0..65535
      they are 16-bit data and scaled as above (``F``: ``floor(value / 256)``); mode ``L``.

    Args:
        img: a PIL image of any mode.
        where: how error messages name the image (a path, ``row 3``, ``support image 2 (array ...)``).

    Returns:
        A PIL image whose mode PIL converts to ``L``/``RGB`` without clipping (``img`` itself when 8-bit).

    Raises:
        DataError: an empty image (width or height 0), or ``I``/``F`` values outside 0..65535 (or NaN):
            no rule maps them to 8 bits, so they are refused rather than guessed.
    """
    if img.width < 1 or img.height < 1:
        raise DataError(f"empty image: {where} has size {img.width}x{img.height}")
    if img.mode in _MODES_16BIT:
        return Image.fromarray((np.asarray(img).astype(np.uint16) >> 8).astype(np.uint8))
    if img.mode not in ("I", "F"):
        return img
    arr = np.asarray(img)
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0 or hi > 65535:
        raise DataError(f"cannot convert image {where} to 8 bits: its mode {img.mode} values {lo:g}..{hi:g} "
                        f"are outside 0..255 and 0..65535")
    if hi <= 255:
        return Image.fromarray(np.rint(arr).astype(np.uint8))
    return Image.fromarray((arr.astype(np.uint32) >> 8).astype(np.uint8))


def decode_images(blobs: list[bytes], channels: int) -> np.ndarray:
    """Decode encoded images (PNG/JPEG bytes) of one size into ``(N, C, H, W)`` uint8.

    16-bit images are scaled to 8 bits by :func:`to_8bit`.

    Raises:
        DataError: ``row I is not a readable image`` for the first corrupt blob, or :func:`to_8bit`'s errors.
    """
    mode = "L" if channels == 1 else "RGB"
    arrs = []
    for i, blob in enumerate(blobs):
        try:
            arrs.append(np.asarray(to_8bit(Image.open(io.BytesIO(blob)), f"row {i}").convert(mode)))
        except DataError:
            raise
        except Exception as exc:  # PIL raises several types for corrupt bytes
            raise DataError(f"row {i} is not a readable image ({type(exc).__name__})") from None
    out = np.stack(arrs)
    return out[:, None] if channels == 1 else out.transpose(0, 3, 1, 2).copy()


def write_split(root: str | Path, split: str, columns: dict[str, list]) -> Path:
    """Write one split's columns (``image`` bytes, ``label``, ``class_name``, ...) as ``ROOT/<split>.parquet``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    table = pa.table({k: (pa.array(v, pa.binary()) if k == "image" else pa.array(v)) for k, v in columns.items()})
    path = root / f"{split}.parquet"
    pq.write_table(table, path, row_group_size=4096)
    return path


def _shown(given: str | Path, resolved: Path) -> str:
    """``given`` as the user wrote it, with its absolute form when that differs (``.. (= /work)``)."""
    return str(given) if Path(given) == resolved else f"{given} (= {resolved})"


def _is_catalog_entry(entry: Path) -> bool:
    """Whether ``entry`` (inside a catalog directory) is a file a fewray catalog holds."""
    if entry.is_symlink():
        return False
    if entry.name == CATALOG_FILE or entry.suffix == ".parquet":
        return entry.is_file()
    if entry.name == DECODED_DIR and entry.is_dir():
        return all(f.is_file() and not f.is_symlink() and f.suffix in (".npy", ".tmp") for f in entry.iterdir())
    return False


def _not_a_catalog(path: Path) -> str | None:
    """None if ``path`` is an empty directory or a catalog fewray wrote, else what makes it something else."""
    entries = sorted(path.iterdir())
    if not entries:
        return None
    foreign = [e.name + ("/" if e.is_dir() and not e.is_symlink() else "") for e in entries if not _is_catalog_entry(e)]
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        return f"it holds {', '.join(foreign[:3])}{more}"
    if not (path / CATALOG_FILE).is_file():
        return f"it has no {CATALOG_FILE}"
    try:
        info = json.loads((path / CATALOG_FILE).read_text())
    except (ValueError, UnicodeDecodeError):
        return f"its {CATALOG_FILE} is not valid JSON"
    if not isinstance(info, dict) or "dataset" not in info:
        return f"its {CATALOG_FILE} has no 'dataset' entry"
    return None


def check_output_dir(out: str | Path, sources: tuple[str | Path, ...] = ()) -> Path:
    """Check that a catalog may be written to ``out`` without losing any file fewray did not write.

    ``out`` may be a new path, an empty directory, or a catalog fewray wrote (``catalog.json`` with a
    ``dataset`` entry, and only ``*.parquet`` files and the ``.decoded/`` cache besides: see the module
    docstring), which is then replaced. Called by every ``prepare_*`` function before any image is read,
    and by :func:`publish_atomically` again right before it replaces ``out``.

    Args:
        out: the catalog directory to write (``~`` and ``..`` allowed).
        sources: directories the catalog is made from (the release); ``out`` must neither be one of them,
            nor lie inside one, nor contain one.

    Returns:
        ``out`` as an absolute path without symlinks or ``..``.

    Raises:
        DataError: ``out`` is, contains or lies inside a source directory; ``out`` is a file or lies under
            a file; ``out`` is a non-empty directory that is not a fewray catalog; ``out`` cannot be read.
    """
    given = out
    out = Path(out).expanduser().resolve()
    shown = _shown(given, out)
    for source in sources:
        src = Path(source).expanduser().resolve()
        if out == src:
            raise DataError(f"output directory {shown} is the source directory: writing the catalog there "
                            f"would delete the release (choose another --out)")
        if out.is_relative_to(src):
            raise DataError(f"output directory {shown} is inside the source directory {source} "
                            f"(choose an --out outside it)")
        if src.is_relative_to(out):
            raise DataError(f"output directory {shown} contains the source directory {source}: replacing it "
                            f"would delete the release (choose another --out)")
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir():
        raise DataError(f"output path {shown} is a file, not a directory" if existing == out else
                        f"output directory {shown} cannot be created: {existing} is a file, not a directory")
    if existing == out:
        try:
            why = _not_a_catalog(out)
        except OSError as exc:
            raise DataError(f"cannot read output directory {shown}: {exc.strerror or exc}") from None
        if why:
            raise DataError(f"output directory {shown} is not a fewray catalog ({why}): refusing to replace "
                            f"it (choose a new or empty directory, or a catalog fewray wrote)")
    return out


@contextmanager
def publish_atomically(out: str | Path) -> Iterator[Path]:
    """Write a catalog into a fresh temporary directory beside ``out``; move it to ``out`` only on success.

    ``out`` must pass :func:`check_output_dir` (a new path, an empty directory or a catalog fewray wrote),
    both on entry and right before it is replaced: a directory holding anything else is never removed.
    On an exception the temporary directory is removed and an existing ``out`` is left untouched.

    Raises:
        DataError: ``out`` fails :func:`check_output_dir`, or its parent directory cannot be written.

    Example::

        >>> import os, shutil, tempfile
        >>> from PIL import Image
        >>> from fewray.data.catalog import encode_png, publish_atomically, write_split
        >>> base = tempfile.mkdtemp()
        >>> columns = {"image": [encode_png(Image.new("L", (28, 28)))] * 2, "label": [0, 1],
        ...            "class_name": ["a", "b"]}
        >>> with publish_atomically(os.path.join(base, "omniglot")) as tmp:
        ...     _ = write_split(tmp, "train", columns)   # written into a hidden sibling of the target
        >>> os.listdir(base), os.listdir(os.path.join(base, "omniglot"))   # moved into place on success
        (['omniglot'], ['train.parquet'])
        >>> shutil.rmtree(base)
    """
    given = out
    out = check_output_dir(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; a catalog is shared (other users, cluster nodes)
    except OSError as exc:
        raise DataError(f"cannot write the catalog {_shown(given, out)}: {exc.strerror or exc} "
                        f"({exc.filename or out.parent})") from None
    try:
        yield tmp
        check_output_dir(out)  # again: files may have been put into out meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def write_catalog_info(root: str | Path, info: dict[str, Any]) -> None:
    """Write ``ROOT/catalog.json``."""
    Path(root, CATALOG_FILE).write_text(json.dumps(info, indent=2) + "\n")


def prepare_hint(root: str) -> str:
    """The ``prepare_data.py`` command that creates the catalog ``root``.

    The dataset is named when the root's directory name is one of ``prepare_data.py``'s datasets, or one
    followed by ``_...`` (``data/caltech101``, ``data/mini-imagenet``, ``data/caltech101_32``); otherwise the
    command says ``DATASET`` and lists them.
    """
    from fewray.data.sources import DETECTION_SOURCES, MULTI_LABEL_SOURCES, SOURCES  # the sources import this module

    datasets = ["omniglot", *SOURCES, *MULTI_LABEL_SOURCES, *DETECTION_SOURCES]
    name = Path(root.rstrip("/")).name.lower().replace("-", "_")
    known = [d for d in sorted(datasets, key=len, reverse=True) if name == d or name.startswith(d + "_")]
    dataset = known[0] if known else "DATASET"
    hint = f"python pipelines/prepare_data.py {dataset} --source RELEASE --out {root}"
    return hint if known else f"{hint}, DATASET one of {', '.join(datasets)}"


def _split_path(root: str, split: str) -> str:
    """``ROOT/<split>.parquet``; for a local ``root``, checked to exist (DataError naming what is missing)."""
    if "://" not in root and not Path(root).is_dir():
        raise DataError(f"data directory not found: {root} (create it with: {prepare_hint(root)})")
    path = f"{root.rstrip('/')}/{split}.parquet"
    if "://" not in root and not Path(path).is_file():
        have = sorted(p.stem for p in Path(root).glob("*.parquet"))
        raise DataError(f"split '{split}' not found in catalog {root} (splits: {', '.join(have) or 'none'})")
    return path


def _short(exc: BaseException) -> str:
    """An exception as one short line."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:200]


def read_columns(path: str, columns: list[str]) -> pa.Table:
    """The ``columns`` of the catalog file ``path`` (a Parquet file), with a one-line error if it cannot serve them.

    Raises:
        DataError: ``catalog file PATH is not a Parquet file (...)``, ``catalog file PATH has no column 'label'
            (columns: ...)``, or ``cannot read catalog file PATH: ...`` for other read errors.
    """
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as exc:
        error = exc
    try:
        names = pq.read_schema(path).names
    except (pa.ArrowException, OSError):
        detail = " ".join(str(error).split(f"'{path}': ", 1)[-1].split())[:160]  # pyarrow repeats the path
        raise DataError(f"catalog file {path} is not a Parquet file ({type(error).__name__}: {detail})") from None
    missing = [c for c in columns if c not in names]
    if missing:
        raise DataError(f"catalog file {path} has no column '{missing[0]}' (columns: {', '.join(names) or 'none'})"
                        f"{_task_hint(path, missing[0])}")
    raise DataError(f"cannot read catalog file {path}: {_short(error)}") from None


def _task_hint(path: str, column: str) -> str:
    """Why a local catalog file lacks the few-shot ``label`` column when its catalog is a multi-label one, else ``""``."""
    if column != "label" or "://" in path:
        return ""
    try:
        info = json.loads(Path(path).parent.joinpath(CATALOG_FILE).read_text())
    except (OSError, ValueError):
        return ""
    if not isinstance(info, dict) or info.get("task") != "multi_label":
        return ""
    return (f": {Path(path).parent} is a multi-label catalog (catalog.json task: multi_label, a label set per image), "
            f"not one class per image; train a multi-label model on it (configs/multi_label/)")


def _labels(table: pa.Table, path: str) -> np.ndarray:
    """The ``label`` column as ``(N,)`` int64, checked to hold non-negative integers without nulls."""
    col = table.column("label")
    if not pa.types.is_integer(col.type):
        raise DataError(f"catalog file {path}: column 'label' holds {col.type}, expected integers")
    if col.null_count:
        raise DataError(f"catalog file {path}: column 'label' has {col.null_count} empty values")
    labels = col.to_numpy().astype(np.int64)
    if len(labels) and labels.min() < 0:
        raise DataError(f"catalog file {path}: column 'label' has a negative label {int(labels.min())}")
    return labels


def read_catalog_info(root: str) -> dict[str, Any]:
    """The catalog's ``catalog.json`` as a dict (empty if absent).

    Raises:
        DataError: ``catalog file ROOT/catalog.json is not valid JSON (...)`` or not a JSON object.
    """
    path = Path(root, CATALOG_FILE)
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"catalog file {path} is not valid JSON ({_short(exc)})") from None
    if not isinstance(info, dict):
        raise DataError(f"catalog file {path} is not a JSON object (it holds a {type(info).__name__})")
    return info


def read_labels(root: str, split: str) -> np.ndarray:
    """Only the ``label`` column of a split, ``(N,)`` int64 (cheap: for checking episode shapes).

    Raises:
        DataError: missing directory or split, a file that is not Parquet or lacks a valid ``label`` column.
    """
    path = _split_path(root, split)
    return _labels(read_columns(path, ["label"]), path)


def load_split(root: str, split: str, channels: int = 1, cache: bool = True) -> SplitData:
    """Read and decode a split of the catalog.

    Decoding is the slow part (about 3 s for Omniglot's 33,840 test PNGs on one core), so the decoded
    ``(N, C, H, W)`` uint8 array of a local catalog is kept in ``ROOT/.decoded/`` as a ``.npy`` file named
    after the Parquet file's size and modification time, and read back on the next call; rewriting the
    split invalidates it (an unreadable cache file is decoded again, with a warning). Remote catalogs
    (``s3://``...) are always decoded.

    Args:
        root: catalog directory or URI.
        split: ``train``, ``val`` or ``test``.
        channels: 1 (grayscale) or 3 (RGB).
        cache: use and fill the decoded cache (default True).

    Raises:
        DataError: missing directory or split, a file that is not Parquet or lacks the ``image``, ``label``
            or ``class_name`` column, or an image that cannot be decoded.
    """
    path = _split_path(root, split)
    table = read_columns(path, ["label", "class_name"])
    labels = _labels(table, path)
    names = table.column("class_name").to_pylist()
    class_names = [""] * (int(labels.max()) + 1 if len(labels) else 0)
    for lab, name in zip(labels.tolist(), names):
        class_names[lab] = name
    images = read_split_images(root, split, channels, len(labels), cache)
    return SplitData(images=images, labels=labels, class_names=class_names)


def read_split_images(root: str, split: str, channels: int, num_images: int, cache: bool = True) -> np.ndarray:
    """The decoded ``image`` column of a split, ``(N, C, H, W)`` uint8, through the ``.decoded/`` cache (see
    :func:`load_split`, which reads a few-shot split's labels beside it; a multi-label split reads its label sets).

    Args:
        root: catalog directory or URI; split: the split; channels: 1 or 3; num_images: the split's row count
            (a cached array of another length is decoded again); cache: use and fill the decoded cache.

    Raises:
        DataError: a missing split, a file without an ``image`` column, an image that cannot be decoded, or
            images of different sizes.
    """
    path = _split_path(root, split)
    cached = _decoded_cache_path(path, channels) if cache else None
    images = _read_cache(cached, num_images) if cached is not None else None
    if images is None:
        blobs = read_columns(path, ["image"]).column("image").to_pylist()
        try:
            images = decode_images(blobs, channels)
        except DataError as exc:
            raise DataError(f"cannot decode an image of split '{split}' in {root}: {exc}") from None
        except ValueError as exc:  # np.stack: images of different sizes
            raise DataError(f"images of split '{split}' in {root} differ in size: {exc}") from None
        if cached is not None:
            _write_cache(cached, images)
    return images


def _read_cache(cached: Path, num_images: int) -> np.ndarray | None:
    """The decoded array in ``cached`` if it holds ``num_images`` images, else None (with a warning if damaged)."""
    if not cached.is_file():
        return None
    try:
        images = np.load(cached)
    except (OSError, ValueError, EOFError) as exc:
        warnings.warn(f"decoded-image cache {cached} is unreadable ({_short(exc)}): decoding again", stacklevel=3)
        return None
    if images.ndim != 4 or len(images) != num_images or images.dtype != np.uint8:
        warnings.warn(f"decoded-image cache {cached} holds {images.dtype} {images.shape}, not {num_images} "
                      f"images: decoding again", stacklevel=3)
        return None
    return images


def _decoded_cache_path(parquet_path: str, channels: int) -> Path | None:
    """``ROOT/.decoded/<split>.c<channels>.<size>-<mtime_ns>.npy`` for a local Parquet file, else None."""
    if "://" in parquet_path:
        return None
    src = Path(parquet_path)
    st = src.stat()
    return src.parent / DECODED_DIR / f"{src.stem}.c{channels}.{st.st_size}-{st.st_mtime_ns}.npy"


def _write_cache(target: Path, images: np.ndarray) -> None:
    """Atomically write the decoded array and drop stale versions of it (a read-only catalog just warns)."""
    try:
        target.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.save(f, images)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
        prefix = target.name.rsplit(".", 2)[0]  # <split>.c<channels>
        for old in target.parent.glob(f"{prefix}.*.npy"):
            if old != target:
                old.unlink(missing_ok=True)
    except OSError as exc:
        warnings.warn(f"cannot write the decoded-image cache {target}: {exc}", stacklevel=3)
