"""mini-ImageNet (Vinyals et al. 2016) in the split of Ravi & Larochelle (2017).

Release layout (as distributed with Ravi & Larochelle's code and used by mmfewshot)::

    SOURCE/train.csv   header ``filename,label``; 64 classes x 600 images
    SOURCE/val.csv     16 classes x 600
    SOURCE/test.csv    20 classes x 600
    SOURCE/images/<filename>     e.g. n0153282900000005.jpg

The class split is the one of the CSV files. Within a split, classes are labelled in order of first
appearance in its CSV (the release lists them sorted by WordNet id). Images are resized to
``image_size`` (84 by default) with a plain resize (``stretch``: Ravi & Larochelle's preprocessing).
Extra column: ``filename``.
"""

from __future__ import annotations

import csv
from pathlib import Path

from fewray.data.sources._common import (
    SPLITS,
    check_output_dir,
    check_split_classes,
    open_image,
    require_dir,
    require_file,
    write_class_catalog,
)
from fewray.core.errors import DataError


def read_split_csv(path: Path) -> list[tuple[str, list[str]]]:
    """``[(class, [filename, ...]), ...]`` of one ``filename,label`` CSV, classes in order of appearance.

    Raises:
        DataError: missing file, a header other than ``filename,label``, or a malformed row (naming the line).
    """
    require_file(path, "mini-ImageNet split file")
    classes: dict[str, list[str]] = {}
    with open(path, newline="") as fh:
        rows = csv.reader(fh)
        header = next(rows, None)
        if header is None or [h.strip() for h in header] != ["filename", "label"]:
            raise DataError(f"{path}: expected the header 'filename,label', got {','.join(header or [])!r}")
        for lineno, row in enumerate(rows, start=2):
            if not row:
                continue
            if len(row) != 2 or not row[0].strip() or not row[1].strip():
                raise DataError(f"{path} line {lineno}: expected 'filename,label', got {','.join(row)!r}")
            classes.setdefault(row[1].strip(), []).append(row[0].strip())
    if not classes:
        raise DataError(f"{path} lists no images")
    return list(classes.items())


def prepare_mini_imagenet(source: str | Path, out: str | Path, image_size: int = 84, resize_mode: str = "stretch",
                          image_format: str = "png", progress=None) -> dict:
    """Convert a mini-ImageNet release (CSV split files + ``images/``) into a Parquet catalog.

    Args:
        source: directory holding ``train.csv``, ``val.csv``, ``test.csv`` and ``images/``.
        out: catalog directory to write (replaced only when the new catalog is complete).
        image_size: output side (84 in the standard protocol).
        resize_mode: ``stretch`` (default) or ``center_crop``; image_format: ``png`` or ``jpeg``.
        progress: optional ``progress(n)`` called after each image.

    Returns:
        The ``catalog.json`` dict (per-split class and image counts).

    Raises:
        DataError: an ``out`` that is, contains or lies inside ``source``, or a non-empty directory that is
            not a fewray catalog (checked first, see :func:`~fewray.data.catalog.check_output_dir`);
            missing source directory, CSV or image file (naming it), a corrupt image (naming it),
            a class in two split files.

    Example::

        >>> prepare_mini_imagenet("~/datasets/mini-imagenet", "data/mini_imagenet")  # doctest: +SKIP
    """
    source = require_dir(Path(source).expanduser(), "mini-ImageNet source directory")
    check_output_dir(out, (source,))  # before any image is read
    images = require_dir(source / "images", "mini-ImageNet image directory")
    splits = {s: read_split_csv(source / f"{s}.csv") for s in SPLITS}
    all_classes = [c for s in SPLITS for c, _ in splits[s]]
    check_split_classes({s: [c for c, _ in splits[s]] for s in SPLITS}, all_classes, f"the CSV files in {source}")

    def load(name: str):
        path = images / name
        if not path.is_file():
            raise DataError(f"image file not found: {path}")
        return open_image(path, str(path)), {"filename": name}

    info = {"dataset": "mini_imagenet", "source": str(source.resolve()),
            "protocol": "Ravi & Larochelle 2017 split: 64 train / 16 val / 20 test classes (the CSV files)"}
    return write_class_catalog(out, info, splits, load, image_size, resize_mode, image_format, progress)
