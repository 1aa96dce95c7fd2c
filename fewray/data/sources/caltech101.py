"""Caltech-101 (Fei-Fei et al. 2004) as a few-shot benchmark: a documented, seeded class split.

Release layout: ``SOURCE/101_ObjectCategories/<class>/image_NNNN.jpg`` (102 folders, 9,145 JPEGs of
varying size, some grayscale). Caltech-101 has no standard few-shot class split, so fewray fixes one:

- ``BACKGROUND_Google`` (clutter, not an object class) is left out, and so is ``Faces_easy``: it holds the
  same 435 photographs as ``Faces``, cropped tighter, so the two in different splits would leak test
  images into training. 100 classes remain (8,242 images).
- The sorted class names are permuted by ``numpy.random.default_rng(0)`` and cut into 60 train, 15 val
  and 25 test classes (:func:`~fewray.data.sources.folder.random_class_split`).
- Images are resized to 84x84 RGB (``stretch``: the whole image, aspect ratio not kept).

The smallest class has 31 images (``inline_skate``), enough for 5-shot 15-query episodes (20 per class).
``catalog.json`` lists the classes of each split.
"""

from __future__ import annotations

from pathlib import Path

from fewray.data.sources._common import check_output_dir, require_dir
from fewray.data.sources.folder import prepare_folder

EXCLUDED = ("BACKGROUND_Google", "Faces_easy")
SPLIT_SEED = 0
SPLIT_COUNTS = (60, 15, 25)


def prepare_caltech101(source: str | Path, out: str | Path, image_size: int = 84, resize_mode: str = "stretch",
                       image_format: str = "png", progress=None) -> dict:
    """Convert Caltech-101 into a Parquet catalog with fewray's 60/15/25 class split (seed 0).

    Args:
        source: directory holding ``101_ObjectCategories/`` (or that directory itself).
        out: catalog directory to write.
        image_size: output side (84 by default).
        resize_mode, image_format, progress: see :func:`~fewray.data.sources._common.write_class_catalog`.

    Returns:
        The ``catalog.json`` dict.

    Raises:
        DataError: an ``out`` that is, contains or lies inside ``source``, or a non-empty directory that is
            not a fewray catalog (checked first, see :func:`~fewray.data.catalog.check_output_dir`);
            as :func:`~fewray.data.sources.folder.prepare_folder`.

    Example::

        >>> prepare_caltech101("../shared/data/caltech101", "data/caltech101")  # doctest: +SKIP
    """
    source = require_dir(Path(source).expanduser(), "Caltech-101 source directory")
    check_output_dir(out, (source,))  # before any image is read
    root = source / "101_ObjectCategories" if (source / "101_ObjectCategories").is_dir() else source
    return prepare_folder(
        root, out, image_size, counts=SPLIT_COUNTS, seed=SPLIT_SEED, exclude=EXCLUDED, resize_mode=resize_mode,
        image_format=image_format, dataset="caltech101",
        protocol="fewray Caltech-101 class split: BACKGROUND_Google and Faces_easy excluded, 100 classes, "
                 "default_rng(0) permutation of the sorted names -> 60 train / 15 val / 25 test",
        progress=progress,
    )
