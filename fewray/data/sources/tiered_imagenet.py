"""tiered-ImageNet (Ren et al. 2018) from its official pickles.

Release layout (Ren et al.'s ``tiered-imagenet.tar``, as read by mmfewshot)::

    SOURCE/{train,val,test}_images_png.pkl   a list (or object array) of PNG-encoded images, each a
                                             uint8 array or bytes; 84x84 RGB
    SOURCE/{train,val,test}_labels.pkl       a dict: "label_specific" (int per image, 0..C-1 within the
                                             split), "label_specific_str" (class names by index),
                                             "label_general", "label_general_str" (the 34 super-classes)

Splits: 351 train / 97 val / 160 test classes (608 in all), separated by their 34 super-categories
(20 train, 6 val, 8 test). Labels are ``label_specific``, class names ``label_specific_str``; the
super-class name is kept in the column ``class_general``, the image's position in the pickle in
``index``.

Security: the pickles are the official format, but ``pickle.load`` can run arbitrary code. They are read
with :func:`~fewray.data.sources._common.restricted_pickle_load`, which only rebuilds builtin
containers and numpy arrays and refuses every other callable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fewray.data.sources._common import (
    SPLITS,
    as_str,
    check_output_dir,
    open_image,
    require_dir,
    restricted_pickle_load,
    write_class_catalog,
)
from fewray.core.errors import DataError


def _get(labels: dict, key: str, path: Path):
    for k in (key, key.encode()):
        if k in labels:
            return labels[k]
    raise DataError(f"{path}: no '{key}' entry (keys: {', '.join(sorted(as_str(k) for k in labels))})")


def _to_bytes(blob, where: str) -> bytes:
    if isinstance(blob, np.ndarray):
        return blob.astype(np.uint8, copy=False).tobytes()
    if isinstance(blob, (bytes, bytearray)):
        return bytes(blob)
    raise DataError(f"{where}: expected PNG bytes or a uint8 array, got {type(blob).__name__}")


def read_split(source: Path, split: str) -> list[tuple[str, list]]:
    """``[(class, [(blob, index, general_name, where), ...]), ...]`` of one split's pickles, by label.

    Raises:
        DataError: missing or corrupt pickle, images and labels of different lengths, a label outside
            ``label_specific_str``, an empty class.
    """
    img_path, lab_path = source / f"{split}_images_png.pkl", source / f"{split}_labels.pkl"
    labels = restricted_pickle_load(lab_path, encoding="latin1")
    images = restricted_pickle_load(img_path, encoding="bytes")
    if not isinstance(labels, dict):
        raise DataError(f"{lab_path}: expected a dict, got {type(labels).__name__}")
    specific = np.asarray(_get(labels, "label_specific", lab_path)).astype(np.int64).ravel()
    names = [as_str(n) for n in _get(labels, "label_specific_str", lab_path)]
    general = np.asarray(labels.get("label_general", labels.get(b"label_general", np.full(len(specific), -1))))
    general_names = [as_str(n) for n in labels.get("label_general_str", labels.get(b"label_general_str", []))]
    if len(images) != len(specific):
        raise DataError(f"{img_path} holds {len(images)} images but {lab_path} has {len(specific)} labels")
    bad = specific[(specific < 0) | (specific >= len(names))]
    if len(bad):
        raise DataError(f"unknown class {int(bad[0])} in {lab_path}: label_specific_str has {len(names)} classes")
    per_class: list[list] = [[] for _ in names]
    for i, lab in enumerate(specific.tolist()):
        g = int(general.ravel()[i]) if general.size == len(specific) else -1
        gname = general_names[g] if 0 <= g < len(general_names) else ""
        per_class[lab].append((images[i], i, gname, f"{img_path.name}[{i}]"))
    return [(names[c], per_class[c]) for c in range(len(names))]


def prepare_tiered_imagenet(source: str | Path, out: str | Path, image_size: int = 84, resize_mode: str = "stretch",
                            image_format: str = "png", progress=None) -> dict:
    """Convert tiered-ImageNet's pickles into a Parquet catalog.

    Args:
        source: directory holding ``{train,val,test}_images_png.pkl`` and ``{train,val,test}_labels.pkl``.
        out: catalog directory to write (replaced only when the new catalog is complete).
        image_size: output side (84: the release's own size, no resampling then).
        resize_mode, image_format, progress: see :func:`~fewray.data.sources._common.write_class_catalog`.

    Returns:
        The ``catalog.json`` dict.

    Raises:
        DataError: an ``out`` that is, contains or lies inside ``source``, or a non-empty directory that is
            not a fewray catalog (checked first, see :func:`~fewray.data.catalog.check_output_dir`);
            missing directory or pickle (naming it), a pickle that needs code to load, a corrupt
            image (``train_images_png.pkl[17]``), a class without images, a label with no class name.

    Example::

        >>> prepare_tiered_imagenet("~/datasets/tiered-imagenet", "data/tiered_imagenet")  # doctest: +SKIP
    """
    source = require_dir(Path(source).expanduser(), "tiered-ImageNet source directory")
    check_output_dir(out, (source,))  # before any image is read
    splits = {s: read_split(source, s) for s in SPLITS}
    names = {s: {c for c, _ in splits[s]} for s in SPLITS}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        both = sorted(names[a] & names[b])
        if both:
            raise DataError(f"class '{both[0]}' is in both split '{a}' and split '{b}' of {source}")

    def load(item):
        blob, index, general, where = item
        return open_image(_to_bytes(blob, where), where), {"class_general": general, "index": index}

    info = {"dataset": "tiered_imagenet", "source": str(source.resolve()),
            "protocol": "Ren et al. 2018 split: 351 train / 97 val / 160 test classes (the release's pickles)"}
    return write_class_catalog(out, info, splits, load, image_size, resize_mode, image_format, progress)
