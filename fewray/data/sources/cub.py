"""CUB-200-2011 (Wah et al. 2011) in the few-shot class split of CloserLook (Chen et al., ICLR 2019).

Release layout (``CUB_200_2011.tgz``)::

    SOURCE/CUB_200_2011/classes.txt               "<class_id> <class_name>", ids 1..200
    SOURCE/CUB_200_2011/images.txt                "<image_id> <class_name>/<file>.jpg"
    SOURCE/CUB_200_2011/image_class_labels.txt    "<image_id> <class_id>"
    SOURCE/CUB_200_2011/images/<class_name>/<file>.jpg

Class split (CloserLook's ``write_CUB_filelist.py``, also mmfewshot's CUB split): the 200 classes in the
order of ``classes.txt`` (= sorted folder names ``001.Black_footed_Albatross`` ...), indexed ``i = 0..199``:
``i % 2 == 0`` -> train (100 classes: ids 1, 3, 5, ...), ``i % 4 == 1`` -> val (50: ids 2, 6, 10, ...),
``i % 4 == 3`` -> test (50: ids 4, 8, 12, ...). The rule is applied to however many classes
``classes.txt`` lists. Bounding boxes are not used. Images (of varying size) are resized to
``image_size`` (84 by default, ``stretch`` unless ``resize_mode='center_crop'``). Extra columns:
``image_id`` and ``filename`` (relative to ``images/``).
"""

from __future__ import annotations

from pathlib import Path

from fewray.data.sources._common import (
    check_output_dir,
    open_image,
    require_dir,
    require_file,
    write_class_catalog,
)
from fewray.core.errors import DataError


def closerlook_split(index: int) -> str:
    """The split of the class at 0-based position ``index`` of ``classes.txt`` (CloserLook's rule)."""
    return "train" if index % 2 == 0 else ("val" if index % 4 == 1 else "test")


def _read_pairs(path: Path) -> list[tuple[str, str]]:
    require_file(path, "CUB-200-2011 file")
    pairs = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise DataError(f"{path} line {lineno}: expected '<id> <value>', got {line!r}")
        pairs.append((parts[0], parts[1].strip()))
    return pairs


def prepare_cub(source: str | Path, out: str | Path, image_size: int = 84, resize_mode: str = "stretch",
                image_format: str = "png", progress=None) -> dict:
    """Convert CUB-200-2011 into a Parquet catalog with CloserLook's 100/50/50 class split.

    Args:
        source: directory holding ``CUB_200_2011/`` (or that directory itself).
        out: catalog directory to write (replaced only when the new catalog is complete).
        image_size: output side (84 by default).
        resize_mode, image_format, progress: see :func:`~fewray.data.sources._common.write_class_catalog`.

    Returns:
        The ``catalog.json`` dict.

    Raises:
        DataError: an ``out`` that is, contains or lies inside ``source``, or a non-empty directory that is
            not a fewray catalog (checked first, see :func:`~fewray.data.catalog.check_output_dir`);
            missing directory, list file or image (naming it), an image whose class id is not in
            ``classes.txt`` (unknown class), a corrupt image (naming it), a class without images.

    Example::

        >>> prepare_cub("~/datasets/CUB", "data/cub")  # doctest: +SKIP
    """
    source = require_dir(Path(source).expanduser(), "CUB-200-2011 source directory")
    check_output_dir(out, (source,))  # before any image is read
    root = source / "CUB_200_2011" if (source / "CUB_200_2011").is_dir() else source
    images_dir = require_dir(root / "images", "CUB-200-2011 image directory")
    classes = _read_pairs(root / "classes.txt")
    files = dict(_read_pairs(root / "images.txt"))
    labels = _read_pairs(root / "image_class_labels.txt")
    order = {cid: i for i, (cid, _) in enumerate(classes)}
    per_class: list[list[tuple[str, str]]] = [[] for _ in classes]
    for image_id, cid in labels:
        if cid not in order:
            raise DataError(f"unknown class id {cid} of image {image_id} in {root / 'image_class_labels.txt'} "
                            f"(not in {root / 'classes.txt'})")
        if image_id not in files:
            raise DataError(f"image id {image_id} of {root / 'image_class_labels.txt'} is not in {root / 'images.txt'}")
        per_class[order[cid]].append((image_id, files[image_id]))
    splits: dict[str, list] = {"train": [], "val": [], "test": []}
    for i, (_, name) in enumerate(classes):
        splits[closerlook_split(i)].append((name, per_class[i]))

    def load(item):
        image_id, rel = item
        path = images_dir / rel
        if not path.is_file():
            raise DataError(f"image file not found: {path}")
        return open_image(path, str(path)), {"image_id": int(image_id) if image_id.isdigit() else -1, "filename": rel}

    info = {"dataset": "cub", "source": str(root.resolve()),
            "protocol": "CloserLook (Chen et al. 2019) class split of CUB-200-2011: class index i in classes.txt "
                        "order, i%2==0 train (100), i%4==1 val (50), i%4==3 test (50)"}
    return write_class_catalog(out, info, splits, load, image_size, resize_mode, image_format, progress)
