"""Any folder of class folders: ``SOURCE/<class>/<image>``, with a given or a seeded random class split.

Layout::

    SOURCE/<class_name>/<any name>.<jpg|jpeg|png|bmp|gif|tif|tiff|webp|ppm|pgm>

Only the files directly inside a class folder whose name ends in one of those extensions (any case)
are images; other files and hidden entries are ignored. Images of any size and mode PIL reads
(grayscale, palette, CMYK, alpha) become ``image_size x image_size`` RGB (``stretch`` by default,
``center_crop`` on request). A class folder without images is an error.

The class split is either

- given (``split_file``): a YAML or JSON file ``{train: [names], val: [names], test: [names]}``, a text file
  of lines ``<split> <class name>``, or a directory holding ``train.txt``, ``val.txt`` and ``test.txt``
  (one class name per line). Class folders listed in no split are left out (``catalog.json`` names them);
  a listed class without a folder is an error;
- or random and seeded: the class names sorted, permuted by ``numpy.random.default_rng(seed)``, and cut
  into ``counts`` (train, val, test) classes, or into ``ratios`` of the class count (train and val
  rounded, test the rest).

A catalog may hold only the splits a user has: a split file may leave splits out (or list none of their
classes), and counts or ratios may be 0 for a split (``--counts 0 0 100``: a test-only catalog to evaluate
a pretrained model on). A split without classes is not written; at least one split must have classes.
Asking a catalog for a split it does not have is an error naming the splits it has
(:func:`~fewray.data.catalog.load_split`).

In both cases the classes of a split are labelled in sorted name order. Extra column: ``filename``
(relative to ``SOURCE``). ``catalog.json`` lists the classes of each split it holds (``classes``) and their
counts (``splits``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml

from fewray.data.sources._common import (
    IMAGE_EXTENSIONS,
    SPLITS,
    check_output_dir,
    check_split_classes,
    open_image,
    require_dir,
    write_class_catalog,
)
from fewray.core.errors import DataError

#: default random split: the class proportions of mini-ImageNet (64 / 16 / 20)
DEFAULT_RATIOS = (0.64, 0.16, 0.20)


def list_classes(source: Path, exclude: Sequence[str] = ()) -> dict[str, list[str]]:
    """``{class_name: [file name, ...]}`` of the class folders of ``source`` (sorted; ``exclude`` left out).

    Raises:
        DataError: no class folders, or a class folder without images (naming it).
    """
    classes: dict[str, list[str]] = {}
    for d in sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if d.name in exclude:
            continue
        files = sorted(f.name for f in d.iterdir()
                       if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise DataError(f"empty class folder: {d} has no images ({', '.join(IMAGE_EXTENSIONS)})")
        classes[d.name] = files
    if not classes:
        raise DataError(f"no class folders in {source} (expected SOURCE/<class>/<images>)")
    return classes


def read_split_file(path: str | Path) -> dict[str, list[str]]:
    """``{split: [class, ...]}`` from a YAML/JSON file, a ``<split> <class>`` text file or a directory of
    ``train.txt``/``val.txt``/``test.txt``; only the splits it names (any of train, val, test), in that order.

    Raises:
        DataError: missing file, unparsable file, a split other than train/val/test, no class in any split
            (a directory: none of the three files).
    """
    path = Path(path).expanduser()
    if path.is_dir():
        out = {}
        for s in SPLITS:
            f = path / f"{s}.txt"
            if f.is_file():
                out[s] = [line.strip() for line in f.read_text().splitlines() if line.strip()]
        if not out:
            raise DataError(f"split directory {path} has none of {', '.join(f'{s}.txt' for s in SPLITS)}")
        if not any(out.values()):
            raise DataError(f"split directory {path} lists no classes")
        return out
    if not path.is_file():
        raise DataError(f"split file not found: {path}")
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml", ".json"):
        try:
            raw = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as exc:
            raise DataError(f"cannot parse split file {path}: {' '.join(str(exc).split())[:160]}") from None
        if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
            raise DataError(f"split file {path}: expected a mapping of split name to a list of class names")
        raw = {str(k): [str(c) for c in v] for k, v in raw.items()}
    else:
        raw = {}
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.strip().split(maxsplit=1)
            if len(parts) != 2:
                raise DataError(f"split file {path} line {lineno}: expected '<split> <class name>', got {line!r}")
            raw.setdefault(parts[0], []).append(parts[1].strip())
    unknown = sorted(set(raw) - set(SPLITS))
    if unknown:
        raise DataError(f"split file {path}: unknown split '{unknown[0]}' (splits are train, val, test)")
    if not any(raw.values()):
        raise DataError(f"split file {path} lists no classes (expected splits train, val, test with class names)")
    return {s: raw[s] for s in SPLITS if s in raw}


def split_counts(num_classes: int, ratios: Sequence[float] | None = None,
                 counts: Sequence[int] | None = None) -> tuple[int, int, int]:
    """Classes per split (train, val, test) from ``counts`` or ``ratios`` (default :data:`DEFAULT_RATIOS`).

    A count or ratio of 0 leaves that split out (``(0, 0, 100)``: a test-only catalog); every split with a
    positive ratio gets at least one class.

    Raises:
        DataError: not three values, a negative value, all zero, more classes asked for than exist, a split
            with a positive ratio that would get no class.
    """
    if counts is not None:
        if len(counts) != 3 or any(int(c) < 0 for c in counts) or not any(int(c) for c in counts):
            raise DataError(f"split counts must be three integers >= 0 (train val test), not all 0, "
                            f"got {list(counts)}")
        n = tuple(int(c) for c in counts)
        if sum(n) > num_classes:
            raise DataError(f"split counts {'/'.join(map(str, n))} need {sum(n)} classes, the folder has {num_classes}")
        return n  # type: ignore[return-value]
    r = tuple(ratios) if ratios is not None else DEFAULT_RATIOS
    if len(r) != 3 or any(x < 0 for x in r) or not any(x > 0 for x in r):
        raise DataError(f"split ratios must be three numbers >= 0 (train val test), not all 0, got {list(r)}")
    total = sum(r)
    used = [i for i, x in enumerate(r) if x > 0]
    counted = [0, 0, 0]
    for i in used[:-1]:  # rounded; the last split with a positive ratio (normally test) gets the rest
        counted[i] = round(num_classes * r[i] / total)
    counted[used[-1]] = num_classes - sum(counted)
    n = tuple(counted)
    if any(n[i] < 1 for i in used):
        raise DataError(f"{num_classes} classes are too few for split ratios {list(r)} "
                        f"(got {'/'.join(map(str, n))} classes)")
    return n


def random_class_split(names: Sequence[str], seed: int, ratios=None, counts=None) -> dict[str, list[str]]:
    """A seeded class split: sorted names permuted by ``default_rng(seed)``, cut into train/val/test, each sorted
    (a split with 0 classes gets an empty list)."""
    names = sorted(names)
    n = split_counts(len(names), ratios, counts)
    perm = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    bounds = np.cumsum((0,) + n)
    return {s: sorted(perm[bounds[i]:bounds[i + 1]]) for i, s in enumerate(SPLITS)}


def prepare_folder(
    source: str | Path,
    out: str | Path,
    image_size: int = 84,
    split_file: str | Path | None = None,
    ratios: Sequence[float] | None = None,
    counts: Sequence[int] | None = None,
    seed: int = 0,
    exclude: Sequence[str] = (),
    resize_mode: str = "stretch",
    image_format: str = "png",
    dataset: str = "folder",
    protocol: str | None = None,
    progress=None,
) -> dict:
    """Convert a folder of class folders into a Parquet catalog.

    Args:
        source: directory of class folders.
        out: catalog directory to write (replaced only when the new catalog is complete).
        image_size: output side (84 by default).
        split_file: a given class split (see the module docstring); else a random split with
        ratios / counts: three numbers (train, val, test); counts win over ratios; default ratios 64/16/20; a 0
            leaves that split out of the catalog.
        seed: seed of the random split.
        exclude: class folder names to leave out (e.g. ``BACKGROUND_Google``).
        resize_mode, image_format, progress: see :func:`~fewray.data.sources._common.write_class_catalog`.
        dataset, protocol: names written to ``catalog.json``.

    Returns:
        The ``catalog.json`` dict (with ``classes`` per split it holds; splits without classes are not written).

    Raises:
        DataError: an ``out`` that is, contains or lies inside ``source``, or a non-empty directory that is
            not a fewray catalog (checked first, see :func:`~fewray.data.catalog.check_output_dir`);
            missing source directory or split file, an empty class folder, an unknown class in the
            split file, a class in two splits, impossible counts/ratios, no class in any split, a corrupt image
            (naming the file).

    Example::

        >>> prepare_folder("photos", "data/photos", image_size=84, counts=(6, 2, 2), seed=0)  # doctest: +SKIP
        >>> prepare_folder("photos", "data/photos_test", image_size=224, counts=(0, 0, 10))  # doctest: +SKIP
    """
    source = require_dir(Path(source).expanduser(), "image folder source directory")
    check_output_dir(out, (source,))  # before any image is read
    classes = list_classes(source, exclude)
    if split_file is not None:
        split_names = read_split_file(split_file)
        check_split_classes(split_names, classes, f"split file {split_file}", allow_empty=True)
        rule = f"class split file {split_file}"
    else:
        split_names = random_class_split(list(classes), seed, ratios, counts)
        n = [len(split_names[s]) for s in SPLITS]
        rule = f"seeded random class split (numpy default_rng({seed}) permutation of the sorted names): {n[0]}/{n[1]}/{n[2]}"
    split_names = {s: sorted(v) for s, v in split_names.items() if v}  # a split without classes is not written
    used = {c for v in split_names.values() for c in v}
    splits = {s: [(c, [f"{c}/{f}" for f in classes[c]]) for c in split_names[s]] for s in split_names}

    def load(rel: str):
        path = source / rel
        return open_image(path, str(path)), {"filename": rel}

    info = {"dataset": dataset, "source": str(source.resolve()), "protocol": protocol or rule, "class_split": rule,
            "excluded": sorted(exclude), "unused_classes": sorted(set(classes) - used),
            "classes": split_names}
    return write_class_catalog(out, info, splits, load, image_size, resize_mode, image_format, progress)
