"""K-shot instance sampling for few-shot detection (TFA's protocol), and TFA's shot files.

**The protocol** (TFA, Wang et al. 2020, https://arxiv.org/abs/2003.06957, its
``datasets/prepare_coco_few_shot.py``): a *K-shot* set of a class holds ``K`` of its annotated instances. Images
that contain the class are drawn in random order; an image's instances of that class are taken *whole* (all of
them, with the image) when they fit in what is left of the quota, and skipped otherwise. Crowd / difficult
(``ignore``) boxes are never instances. TFA keeps the set of one K when going to the next, so the sets are
nested; :func:`sample_shots` makes that exact for every K:

- each ``(seed, class)`` has one fixed order of its images: sorted by ``blake2b(f"{seed}/{class}/{image_id}")``
  (a hash, so the same on any machine, Python and NumPy version, and independent of the records' order);
- the set for ``K`` is the set for ``K - 1`` plus one pass over that order, taking (in order) each image not
  taken yet whose instances fit in ``K - |set(K - 1)|``. Hence 1-shot ⊂ 2-shot ⊂ 3-shot ⊂ 5-shot ⊂ 10-shot;
- when no image left fits (a class seen only in crowds, like COCO's cows, at K = 1; or the singles used up), the
  quota is completed with *part* of an image's instances, an image already taken in part first (mmfewshot's
  per-instance rule; its other instances of the class stay unannotated), and a ``UserWarning`` names the class
  and those images (TFA's script would loop forever there).

So every class gets exactly ``K`` instances, except a class with fewer than ``K`` in all: it gets all it has, and
a ``UserWarning`` names the class and the count.

A *selection* is ``{class index: [(image_id, [ann_id, ...]), ...]}``: per class, the images and the annotation
ids taken there. :func:`apply_shots` cuts records down to a selection.

**TFA's shot files** (the sets TFA published, so that results compare with the papers):
COCO ``full_box_{K}shot_{class}_trainval.json`` (a COCO file of the class's K instances; class names with
spaces, ``full_box_10shot_dining table_trainval.json``) and VOC ``box_{K}shot_{class}_train.txt`` (image paths,
``datasets/VOC2007/JPEGImages/000005.jpg``, one per line; every instance of the class in those images counts).
:func:`read_tfa_coco_shots` / :func:`read_tfa_voc_shots` read them into a selection entry, checked against the
dataset's records.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from fewray.core.errors import DataError
from fewray.data.detection.records import subset
from fewray.data.detection.splits import novel_and_base

#: one class's part of a selection: ``[(image_id, [ann_id, ...]), ...]``
ClassSelection = list[tuple[int, list[int]]]


def _order_key(seed: int, key: str, image_id: int) -> bytes:
    return hashlib.blake2b(f"{seed}/{key}/{image_id}".encode(), digest_size=8).digest()


def sample_shots(records: list[dict[str, Any]], num_classes: int, shots_per_class: dict[int, int], seed: int,
                 class_names: list[str] | None = None) -> dict[int, ClassSelection]:
    """K instances per class, TFA's way, nested over K (module docstring: the exact rule).

    Args:
        records: the dataset's records (labels ``0..num_classes-1``); their order does not matter.
        num_classes: the number of classes the labels index.
        shots_per_class: ``{class index: K}`` (K >= 1) for the classes to sample; others are left out.
        seed: the sampling seed (int); same ``(seed, K)``, same instances on any machine.
        class_names: when given, a class's order is keyed by its name instead of its index, so a class draws the
            same instances whatever the dataset's class list (``BASE_CLASSES`` or ``ALL_CLASSES``).

    Returns:
        ``{class index: [(image_id, [ann_id, ...]), ...]}`` in the order the images were taken.

    Raises:
        ValueError: a class index outside ``0..num_classes-1``, a K below 1, or ``class_names`` of the wrong length.

    Warns:
        UserWarning: ``class 'NAME' has N instances for K shots ...`` for a class that gets fewer than K.

    Example::

        >>> from fewray.data.detection.records import make_record
        >>> recs = [make_record(i, f"{i}.jpg", f"{i}.jpg", 9, 9, [[0, 0, 1, 1]] * n, [0] * n, [False] * n,
        ...                     [10 * i + k for k in range(n)]) for i, n in [(1, 1), (2, 2), (3, 1), (4, 1), (5, 3)]]
        >>> one, three = sample_shots(recs, 1, {0: 1}, seed=0)[0], sample_shots(recs, 1, {0: 3}, seed=0)[0]
        >>> sum(len(a) for _, a in three), set(one[0][1]) <= {a for _, ids in three for a in ids}
        (3, True)
    """
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"class_names has {len(class_names)} names for {num_classes} classes")
    by_class: dict[int, dict[int, list[int]]] = {c: {} for c in shots_per_class}
    for c, k in shots_per_class.items():
        if not 0 <= int(c) < num_classes:
            raise ValueError(f"class index {c} is outside 0..{num_classes - 1}")
        if int(k) < 1:
            raise ValueError(f"shots for class {c} must be >= 1, got {k}")
    for rec in records:
        labels, ignore, ann_ids = rec["labels"], rec["ignore"], rec["ann_ids"]
        for c in by_class:
            ids = ann_ids[(labels == c) & ~ignore]
            if len(ids):
                by_class[c][int(rec["image_id"])] = [int(a) for a in ids]
    out: dict[int, ClassSelection] = {}
    for c, k in shots_per_class.items():
        images = by_class[c]
        key = class_names[c] if class_names is not None else str(c)
        order = sorted(images, key=lambda iid: (_order_key(seed, key, iid), iid))
        taken, partial = _take(order, images, int(k))
        count, have = sum(len(v) for v in taken.values()), sum(len(v) for v in images.values())
        name = class_names[c] if class_names is not None else f"#{c}"
        if count < k:
            warnings.warn(f"class '{name}' has {count} instances for {k} shots (all it has)", UserWarning,
                          stacklevel=2)
        elif partial:
            warnings.warn(f"class '{name}': {k} shots took part of the instances of {len(partial)} image(s) "
                          f"({', '.join(str(i) for i in sorted(partial)[:5])}): no image left held few enough "
                          f"(their other instances of the class are unannotated)", UserWarning, stacklevel=2)
        out[int(c)] = list(taken.items())
    return out


def _take(order: list[int], images: dict[int, list[int]], k: int) -> tuple[dict[int, list[int]], set[int]]:
    """The nested K-shot rule for one class: ``({image_id: taken ann ids}, images taken only in part)``."""
    taken: dict[int, list[int]] = {}
    count = 0
    for step in range(1, k + 1):
        quota = step - count
        started = [i for i in order if i in taken and len(taken[i]) < len(images[i])]
        candidates = started + [i for i in order if i not in taken]
        for iid in candidates:  # whole: what is left of an image, when it fits
            left = images[iid][len(taken.get(iid, [])):]
            if 0 < len(left) <= quota:
                taken[iid] = taken.get(iid, []) + left
                count, quota = count + len(left), quota - len(left)
            if quota == 0:
                break
        for iid in candidates:  # nothing fits: part of an image (started ones first)
            if quota == 0:
                break
            left = images[iid][len(taken.get(iid, [])):]
            if left:
                taken[iid] = taken.get(iid, []) + left[:quota]
                count, quota = count + min(quota, len(left)), quota - min(quota, len(left))
    partial = {i for i, ids in taken.items() if len(ids) < len(images[i])}
    return taken, partial


def apply_shots(records: list[dict[str, Any]], selection: dict[int, ClassSelection],
                keep_classes: set[int] | frozenset[int] = frozenset()) -> list[dict[str, Any]]:
    """The records cut down to a selection: one record per image with only the selected annotations.

    The union over classes: an image selected for two classes keeps both classes' selected annotations. Ignore
    (crowd / difficult) boxes of the selected classes are removed; the annotations of ``keep_classes`` (classes
    without a shot count, mmfewshot's classes absent from ``ann_shot_filter``) are kept whole, ignore boxes
    included. Images left without any annotation are dropped. Input order is kept.

    Args:
        records: the dataset's records. selection: ``{class index: [(image_id, [ann_id, ...]), ...]}``.
        keep_classes: class indices whose annotations are all kept.

    Raises:
        DataError: a selected image id or annotation id that the records do not have, or an annotation selected
            for a class it is not of.

    Example::

        >>> from fewray.data.detection.records import make_record
        >>> r = make_record(5, "5.jpg", "5.jpg", 9, 9, [[0, 0, 1, 1], [1, 1, 2, 2], [2, 2, 3, 3]], [0, 0, 1],
        ...                 [False, False, False], [50, 51, 52])
        >>> [x["ann_ids"].tolist() for x in apply_shots([r], {0: [(5, [51])]}, keep_classes={1})]
        [[51, 52]]
    """
    index = {int(r["image_id"]): i for i, r in enumerate(records)}
    chosen: dict[int, set[int]] = {}
    for c, images in selection.items():
        for iid, ann_ids in images:
            if int(iid) not in index:
                raise DataError(f"the shot selection of class {c} names image {iid}, which the dataset does not have")
            rec = records[index[int(iid)]]
            have = dict(zip(rec["ann_ids"].tolist(), rec["labels"].tolist()))
            for a in ann_ids:
                if have.get(int(a)) != int(c):
                    raise DataError(f"the shot selection of class {c} names annotation {a} of image {iid}, which "
                                    + ("is of class {}".format(have[int(a)]) if int(a) in have else
                                       "the dataset does not have"))
            chosen.setdefault(int(iid), set()).update(int(a) for a in ann_ids)
    keep_arr = np.array(sorted(keep_classes), dtype=np.int64)
    out = []
    for rec in records:
        picked = chosen.get(int(rec["image_id"]), set())
        mask = np.isin(rec["ann_ids"], list(picked)) & ~rec["ignore"] if picked else np.zeros(len(rec["ann_ids"]), bool)
        mask |= np.isin(rec["labels"], keep_arr)
        if mask.any():
            out.append(subset(rec, mask))
    return out


def tfa_coco_shot_file(directory: str | Path, shots: int, class_name: str) -> Path:
    """TFA's COCO shot file of a class: ``DIR/full_box_{K}shot_{class}_trainval.json``.

    Example::

        >>> tfa_coco_shot_file("cocosplit/seed1", 10, "dining table").name
        'full_box_10shot_dining table_trainval.json'
    """
    return Path(directory) / f"full_box_{shots}shot_{class_name}_trainval.json"


def tfa_voc_shot_file(directory: str | Path, shots: int, class_name: str) -> Path:
    """TFA's VOC shot file of a class: ``DIR/box_{K}shot_{class}_train.txt``.

    Example::

        >>> tfa_voc_shot_file("vocsplit/seed1", 3, "sofa").name
        'box_3shot_sofa_train.txt'
    """
    return Path(directory) / f"box_{shots}shot_{class_name}_train.txt"


def _check_in_records(path: Path, label: int, picks: dict[int, list[int]],
                      records: list[dict[str, Any]]) -> ClassSelection:
    index = {int(r["image_id"]): r for r in records}
    for iid, ann_ids in picks.items():
        rec = index.get(iid)
        if rec is None:
            raise DataError(f"shot file {path} names image {iid}, which the dataset does not have "
                            f"(is it the dataset the shots were drawn from?)")
        have = dict(zip(rec["ann_ids"].tolist(), rec["labels"].tolist()))
        for a in ann_ids:
            if have.get(a) != label:
                raise DataError(f"shot file {path} names annotation {a} of image {iid}, which "
                                + ("is of another class" if a in have else "the dataset does not have"))
    return [(iid, ids) for iid, ids in picks.items()]


def read_tfa_coco_shots(path: str | Path, records: list[dict[str, Any]], label: int) -> ClassSelection:
    """A TFA COCO shot file (``full_box_{K}shot_{class}_trainval.json``) as one class's selection.

    Args:
        path: the file. records: the dataset's records (the annotations must be theirs, by image and
            annotation id). label: the class's index in the records' labels.

    Raises:
        DataError: a missing or unparsable file, one without ``annotations``, or an annotation the records do
            not have (naming the file, the image id and the annotation id).

    Example::

        >>> import json, os, tempfile
        >>> from fewray.data.detection.records import make_record
        >>> recs = [make_record(9, "9.jpg", "9.jpg", 9, 9, [[0, 0, 1, 1]], [0], [False], [90])]
        >>> p = os.path.join(tempfile.mkdtemp(), "full_box_1shot_cat_trainval.json")
        >>> _ = open(p, "w").write(json.dumps({"images": [{"id": 9}], "annotations": [{"id": 90, "image_id": 9}]}))
        >>> read_tfa_coco_shots(p, recs, 0)
        [(9, [90])]
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"shot file not found: {path}")
    try:
        data = json.loads(path.read_bytes())
        anns = data["annotations"]
        picks: dict[int, list[int]] = {}
        for a in anns:
            picks.setdefault(int(a["image_id"]), []).append(int(a["id"]))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"shot file {path} is not valid JSON ({' '.join(str(exc).split())[:120]})") from None
    except (KeyError, TypeError):
        raise DataError(f"shot file {path} is not a COCO file of annotations with 'id' and 'image_id'") from None
    return _check_in_records(path, int(label), picks, records)


def read_tfa_voc_shots(path: str | Path, records: list[dict[str, Any]], label: int) -> ClassSelection:
    """A TFA VOC shot file (``box_{K}shot_{class}_train.txt``: image paths) as one class's selection: every
    non-ignored instance of the class in the listed images (TFA's VOC rule). Images are matched by file stem.

    Raises:
        DataError: a missing file, an image the records do not have, or a listed image without the class.

    Example::

        >>> import os, tempfile
        >>> from fewray.data.detection.records import make_record
        >>> recs = [make_record(5, "000005.jpg", "000005.jpg", 9, 9, [[0, 0, 1, 1]], [3], [False], [1])]
        >>> p = os.path.join(tempfile.mkdtemp(), "box_1shot_sofa_train.txt")
        >>> _ = open(p, "w").write("datasets/VOC2007/JPEGImages/000005.jpg\\n")
        >>> read_tfa_voc_shots(p, recs, 3)
        [(5, [1])]
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"shot file not found: {path}")
    by_stem = {Path(r["file_name"]).stem: r for r in records}
    picks: dict[int, list[int]] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        stem = Path(line.strip()).stem
        rec = by_stem.get(stem)
        if rec is None:
            raise DataError(f"shot file {path} names image {line.strip()}, which the dataset does not have")
        ids = rec["ann_ids"][(rec["labels"] == label) & ~rec["ignore"]]
        if not len(ids):
            raise DataError(f"shot file {path} names image {line.strip()}, which has no instance of its class")
        picks[int(rec["image_id"])] = [int(a) for a in ids]
    return _check_in_records(path, int(label), picks, records)


def shot_filter(classes: list[str], spec: Any, class_splits: dict[str, list[str]], num_novel_shots: int | None,
                num_base_shots: int | None, ann_shot_filter: dict[str, int] | None) -> dict[str, int]:
    """``{class name: K}`` of a few-shot dataset (mmfewshot's ``ann_shot_filter``): ``num_novel_shots`` for the
    novel classes and ``num_base_shots`` for the base ones (:func:`~fewray.data.detection.splits.novel_and_base`),
    only those in ``classes``; ``ann_shot_filter`` entries override. Classes absent keep all their annotations.

    Raises:
        DataError: a shot count below 1 or not an integer; an ``ann_shot_filter`` class not in ``classes``;
            ``num_novel_shots`` / ``num_base_shots`` with a class split that has no novel / base classes.

    Example::

        >>> shot_filter(["cat", "dog"], "ALL", {"NOVEL_CLASSES": ["dog"], "BASE_CLASSES": ["cat"]}, 1, None, None)
        {'dog': 1}
    """
    novel, base = novel_and_base(spec, class_splits)
    out: dict[str, int] = {}
    for what, k, names in (("num_novel_shots", num_novel_shots, novel), ("num_base_shots", num_base_shots, base)):
        if k is None:
            continue
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise DataError(f"{what} must be an integer >= 1, got {k!r}")
        if not names:
            raise DataError(f"{what}={k} but the class splits have no {what.split('_')[1]} classes for "
                            f"classes={spec!r} (class splits: {', '.join(class_splits)})")
        out.update({n: int(k) for n in names if n in classes})
    for name, k in (ann_shot_filter or {}).items():
        if name not in classes:
            raise DataError(f"ann_shot_filter names class '{name}', which is not one of the dataset's classes "
                            f"({', '.join(classes[:30])}{', ...' if len(classes) > 30 else ''})")
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise DataError(f"ann_shot_filter: shots of class '{name}' must be an integer >= 1, got {k!r}")
        out[name] = int(k)
    return out


def take_shots(records: list[dict[str, Any]], classes: list[str], shots: dict[str, int], seed: int,
               shot_files: str | Path | None, read_file: Any, file_of: Any) -> list[dict[str, Any]]:
    """Records cut to ``shots`` (``{class name: K}``): sampled (:func:`sample_shots`)
    or read from TFA shot files in ``shot_files`` (``file_of(dir, K, name)`` names one, ``read_file(path, records,
    label)`` reads it). Classes without a count keep all their annotations.

    Raises:
        DataError: a missing shot-file directory or file, or :func:`apply_shots`' errors.

    Example::

        >>> from fewray.data.detection.records import make_record
        >>> recs = [make_record(i, f"{i}.jpg", f"{i}.jpg", 9, 9, [[0, 0, 1, 1], [1, 1, 2, 2]], [0, 1], [False] * 2,
        ...                     [2 * i, 2 * i + 1]) for i in range(4)]
        >>> out = take_shots(recs, ["cat", "dog"], {"cat": 2}, 0, None, read_tfa_coco_shots, tfa_coco_shot_file)
        >>> sum(int((r["labels"] == 0).sum()) for r in out), sum(int((r["labels"] == 1).sum()) for r in out)
        (2, 4)
    """
    if not shots:
        return records
    labels = {classes.index(n): k for n, k in shots.items()}
    if shot_files is not None:
        if not Path(shot_files).expanduser().is_dir():
            raise DataError(f"shot file directory not found: {shot_files}")
        selection = {c: read_file(file_of(Path(shot_files).expanduser(), k, classes[c]), records, c)
                     for c, k in labels.items()}
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            selection = sample_shots(records, len(classes), labels, seed, class_names=classes)
    keep = {i for i in range(len(classes)) if i not in labels}
    return apply_shots(records, selection, keep_classes=keep)
