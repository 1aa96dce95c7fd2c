"""The Parquet catalog: one table per split with encoded image bytes and labels.

Layout of a catalog directory (written by ``pipelines/prepare_data.py``)::

    ROOT/catalog.json        dataset name, image size, channels, protocol, per-split counts
    ROOT/train.parquet       columns: image (PNG bytes), label (int32, 0..C-1 within the split),
    ROOT/val.parquet                  class_name (str), plus dataset-specific columns
    ROOT/test.parquet                 (Omniglot: alphabet, character, rotation)

``ROOT`` may be a local path or any URI pyarrow understands (``s3://``, ``gs://``), so a
cluster can read one shared catalog.
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

from fewray.platform.errors import DataError

CATALOG_FILE = "catalog.json"


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


def decode_images(blobs: list[bytes], channels: int) -> np.ndarray:
    """Decode encoded images (PNG/JPEG bytes) of one size into ``(N, C, H, W)`` uint8.

    Raises:
        DataError: ``row I is not a readable image`` for the first corrupt blob.
    """
    mode = "L" if channels == 1 else "RGB"
    arrs = []
    for i, blob in enumerate(blobs):
        try:
            arrs.append(np.asarray(Image.open(io.BytesIO(blob)).convert(mode)))
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


@contextmanager
def publish_atomically(out: str | Path) -> Iterator[Path]:
    """Write a catalog into a fresh temporary directory beside ``out``; move it to ``out`` only on success.

    On an exception the temporary directory is removed and an existing ``out`` is left untouched.

    Example::

        >>> with publish_atomically("data/omniglot") as tmp:
        ...     write_split(tmp, "train", columns)
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a catalog is shared (other users, cluster nodes)
    try:
        yield tmp
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


def _split_path(root: str, split: str) -> str:
    if "://" not in root and not Path(root).is_dir():
        raise DataError(
            f"data directory not found: {root} (create it with: python pipelines/prepare_data.py omniglot --out {root})"
        )
    path = f"{root.rstrip('/')}/{split}.parquet"
    if "://" not in root and not Path(path).is_file():
        have = sorted(p.stem for p in Path(root).glob("*.parquet"))
        raise DataError(f"split '{split}' not found in catalog {root} (splits: {', '.join(have) or 'none'})")
    return path


def read_catalog_info(root: str) -> dict[str, Any]:
    """The catalog's ``catalog.json`` as a dict (empty if absent)."""
    path = Path(root, CATALOG_FILE)
    return json.loads(path.read_text()) if path.is_file() else {}


def read_labels(root: str, split: str) -> np.ndarray:
    """Only the ``label`` column of a split, ``(N,)`` int64 (cheap: for checking episode shapes)."""
    table = pq.read_table(_split_path(root, split), columns=["label"])
    return table.column("label").to_numpy().astype(np.int64)


def load_split(root: str, split: str, channels: int = 1, cache: bool = True) -> SplitData:
    """Read and decode a split of the catalog.

    Decoding is the slow part (about 3 s for Omniglot's 33,840 test PNGs on one core), so the decoded
    ``(N, C, H, W)`` uint8 array of a local catalog is kept in ``ROOT/.decoded/`` as a ``.npy`` file named
    after the Parquet file's size and modification time, and read back on the next call; rewriting the
    split invalidates it. Remote catalogs (``s3://``...) are always decoded.

    Args:
        root: catalog directory or URI.
        split: ``train``, ``val`` or ``test``.
        channels: 1 (grayscale) or 3 (RGB).
        cache: use and fill the decoded cache (default True).

    Raises:
        DataError: missing directory or split, or an image that cannot be decoded.
    """
    path = _split_path(root, split)
    table = pq.read_table(path, columns=["label", "class_name"])
    labels = table.column("label").to_numpy().astype(np.int64)
    names = table.column("class_name").to_pylist()
    class_names = [""] * (int(labels.max()) + 1 if len(labels) else 0)
    for lab, name in zip(labels.tolist(), names):
        class_names[lab] = name
    cached = _decoded_cache_path(path, channels) if cache else None
    if cached is not None and cached.is_file():
        images = np.load(cached)
    else:
        blobs = pq.read_table(path, columns=["image"]).column("image").to_pylist()
        try:
            images = decode_images(blobs, channels)
        except DataError as exc:
            raise DataError(f"cannot decode an image of split '{split}' in {root}: {exc}") from None
        except ValueError as exc:  # np.stack: images of different sizes
            raise DataError(f"images of split '{split}' in {root} differ in size: {exc}") from None
        if cached is not None:
            _write_cache(cached, images)
    return SplitData(images=images, labels=labels, class_names=class_names)


def _decoded_cache_path(parquet_path: str, channels: int) -> Path | None:
    """``ROOT/.decoded/<split>.c<channels>.<size>-<mtime_ns>.npy`` for a local Parquet file, else None."""
    if "://" in parquet_path:
        return None
    src = Path(parquet_path)
    st = src.stat()
    return src.parent / ".decoded" / f"{src.stem}.c{channels}.{st.st_size}-{st.st_mtime_ns}.npy"


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
