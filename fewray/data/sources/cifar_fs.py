"""CIFAR-FS (Bertinetto et al., ICLR 2019) from the CIFAR-100 python release and the split files.

Release layout::

    SOURCE/cifar-100-python/train     pickle: {b"data": (50000, 3072) uint8, b"fine_labels": [...], ...}
    SOURCE/cifar-100-python/test      pickle: the same with 10000 images
    SOURCE/cifar-100-python/meta      pickle: {b"fine_label_names": [b"apple", ...], ...}
    SOURCE/splits/bertinetto/{train,val,test}.txt   fine class names, one per line (64 / 16 / 20)

Each class holds all its 600 images (500 from ``train`` then 100 from ``test``), 32x32 RGB (rows of
``data`` are 1024 red, 1024 green, 1024 blue values, row-major). Classes are labelled in the order of the
split file. Extra column: ``source_index`` (``"train/123"``).

Security: the CIFAR pickles are read with
:func:`~fewray.data.sources._common.restricted_pickle_load` (numpy arrays and builtin types only,
no arbitrary code).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from fewray.data.sources._common import (
    SPLITS,
    as_str,
    check_output_dir,
    check_split_classes,
    require_dir,
    require_file,
    restricted_pickle_load,
    write_class_catalog,
)
from fewray.core.errors import DataError


def read_class_list(path: Path) -> list[str]:
    """Class names of a split file: one per line, blank lines and surrounding spaces ignored."""
    require_file(path, "split file")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _entry(d, key: str, path: Path):
    if not isinstance(d, dict):
        raise DataError(f"{path}: expected a dict, got {type(d).__name__}")
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise DataError(f"{path}: no '{key}' entry")


def prepare_cifar_fs(source: str | Path, out: str | Path, image_size: int = 32, resize_mode: str = "stretch",
                     image_format: str = "png", split_dir: str | Path | None = None, progress=None) -> dict:
    """Convert CIFAR-100 + Bertinetto's split files into a Parquet catalog (CIFAR-FS).

    Args:
        source: directory holding ``cifar-100-python/`` and ``splits/bertinetto/``.
        out: catalog directory to write (replaced only when the new catalog is complete).
        image_size: output side (32: no resampling).
        split_dir: directory of ``train.txt``/``val.txt``/``test.txt`` (default ``SOURCE/splits/bertinetto``).
        resize_mode, image_format, progress: see :func:`~fewray.data.sources._common.write_class_catalog`.

    Returns:
        The ``catalog.json`` dict.

    Raises:
        DataError: an ``out`` that is, contains or lies inside ``source``, or a non-empty directory that is
            not a fewray catalog (checked first, see :func:`~fewray.data.catalog.check_output_dir`);
            missing directory, pickle or split file (naming it), a pickle that needs code to load,
            malformed arrays, an unknown class name in a split file (naming it and the file), a class in two
            splits, a class without images.

    Example::

        >>> prepare_cifar_fs("~/datasets/cifar", "data/cifar_fs")  # doctest: +SKIP
    """
    source = require_dir(Path(source).expanduser(), "CIFAR-FS source directory")
    check_output_dir(out, (source,))  # before any image is read
    pydir = require_dir(source / "cifar-100-python", "CIFAR-100 python directory")
    sdir = require_dir(Path(split_dir) if split_dir else source / "splits" / "bertinetto", "CIFAR-FS split directory")
    meta_path = pydir / "meta"
    names = [as_str(n) for n in _entry(restricted_pickle_load(meta_path), "fine_label_names", meta_path)]
    split_names = {s: read_class_list(sdir / f"{s}.txt") for s in SPLITS}
    check_split_classes(split_names, names, f"the split files in {sdir}")
    index = {n: i for i, n in enumerate(names)}
    per_class: list[list] = [[] for _ in names]
    for part in ("train", "test"):
        path = pydir / part
        d = restricted_pickle_load(path)
        data = np.asarray(_entry(d, "data", path))
        labels = np.asarray(_entry(d, "fine_labels", path)).astype(np.int64).ravel()
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
            raise DataError(f"{path}: expected data (N, 3072) uint8 and N fine_labels, got data {data.dtype} "
                            f"{data.shape} and {len(labels)} labels")
        bad = labels[(labels < 0) | (labels >= len(names))]
        if len(bad):
            raise DataError(f"unknown class {int(bad[0])} in {path}: {meta_path} names {len(names)} classes")
        for i, lab in enumerate(labels.tolist()):
            per_class[lab].append((data, i, part))
    splits = {s: [(n, per_class[index[n]]) for n in split_names[s]] for s in SPLITS}

    def load(item):
        data, i, part = item
        return Image.fromarray(data[i].reshape(3, 32, 32).transpose(1, 2, 0)), {"source_index": f"{part}/{i}"}

    info = {"dataset": "cifar_fs", "source": str(source.resolve()), "split_files": str(sdir),
            "protocol": "Bertinetto et al. 2019 split of CIFAR-100: 64 train / 16 val / 20 test classes, 600 images each"}
    return write_class_catalog(out, info, splits, load, image_size, resize_mode, image_format, progress)
