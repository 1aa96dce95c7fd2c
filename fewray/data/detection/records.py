"""One image of a detection dataset as a plain dict (a *record*), and the operations on lists of them.

A record (mmdet's ``data_infos`` entry with its ``ann`` flattened into arrays)::

    {"image_id": int,          # COCO's image id; VOC: the numeric file id, else the position in the image set
     "file_name": str,         # as the annotation names it (COCO's file_name, VOC's <id>.jpg)
     "path": str,              # the absolute image path (a catalog's records hold "image" bytes instead)
     "width": int, "height": int,              # pixels
     "boxes": float32 (M, 4),  # x1, y1, x2, y2 in pixels (COCO's [x, y, w, h] -> [x, y, x + w, y + h])
     "labels": int64 (M,),     # index into the dataset's class list (its CLASSES)
     "ignore": bool (M,),      # COCO iscrowd / VOC difficult: kept for evaluation, never a training target
     "ann_ids": int64 (M,),    # COCO's annotation ids (VOC: numbered 1.. in reading order)
     "areas": float32 (M,)}    # COCO's ``area`` (the mask's), else the box area, pixels^2

Records are what the datasets (:class:`~fewray.data.detection.coco.FewShotCocoDataset`,
:class:`~fewray.data.detection.voc.FewShotVOCDataset`) hold as ``data_infos``, what the catalog stores
(:mod:`fewray.data.detection.catalog`) and what the batch builder reads (:mod:`fewray.data.detection.builder`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fewray.core.errors import DataError

#: a box may pass the image's border by this many pixels; it is then clipped to the image
BORDER_TOLERANCE = 1.0
#: array fields of a record: name -> (dtype, shape after the first axis)
ARRAY_FIELDS = {"boxes": (np.float32, (4,)), "labels": (np.int64, ()), "ignore": (np.bool_, ()),
                "ann_ids": (np.int64, ()), "areas": (np.float32, ())}


def make_record(image_id: int, file_name: str, path: str, width: int, height: int, boxes: Any = (),
                labels: Any = (), ignore: Any = (), ann_ids: Any = (), areas: Any = None) -> dict[str, Any]:
    """A record with its arrays in the record dtypes (module docstring); ``areas`` defaults to the box areas.

    Args:
        image_id (int), file_name (str), path (str), width, height (int, pixels): the image.
        boxes: ``(M, 4)`` x1, y1, x2, y2 pixels (any sequence); labels, ignore, ann_ids, areas: ``(M,)``.

    Raises:
        ValueError: arrays of different lengths.

    Example::

        >>> r = make_record(7, "7.jpg", "/data/7.jpg", 64, 48, [[0, 0, 10, 20]], [2], [False], [70])
        >>> r["boxes"].dtype, r["labels"].tolist(), r["areas"].tolist()
        (dtype('float32'), [2], [200.0])
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    areas = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) if areas is None else areas)
    rec = {"image_id": int(image_id), "file_name": str(file_name), "path": str(path), "width": int(width),
           "height": int(height), "boxes": boxes}
    for name, value in (("labels", labels), ("ignore", ignore), ("ann_ids", ann_ids), ("areas", areas)):
        rec[name] = np.asarray(value, dtype=ARRAY_FIELDS[name][0]).reshape(-1)
        if len(rec[name]) != len(boxes):
            raise ValueError(f"record {image_id}: {len(boxes)} boxes but {len(rec[name])} {name}")
    return rec


def check_box(box: Any, width: int, height: int, where: str) -> list[float]:
    """A box ``[x1, y1, x2, y2]`` (pixels) checked against its image, clipped to it within the tolerance.

    A box may pass the image's border by up to :data:`BORDER_TOLERANCE` (1 pixel: rounding in the annotation
    tools and in resized releases); it is then clipped to ``0..width`` x ``0..height``. Farther out it is an error.

    Args:
        box: 4 numbers, x1, y1, x2, y2 in pixels. width, height: the image size in pixels.
        where: how the error names the box (file, image id and annotation id).

    Raises:
        DataError: ``WHERE: box [...] has non-positive width or height`` (also NaN), or ``WHERE: box [...] lies
            outside the 640x480 image (by more than 1 pixel)``.

    Example::

        >>> check_box([-0.5, 2, 640.8, 30], 640, 480, "a.json image 1 annotation 5")
        [0.0, 2.0, 640.0, 30.0]
        >>> check_box([5, 5, 5, 9], 640, 480, "a.json image 1 annotation 6")
        Traceback (most recent call last):
        fewray.core.errors.DataError: a.json image 1 annotation 6: box [5, 5, 5, 9] (x1, y1, x2, y2) has non-positive width or height
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    shown = "[" + ", ".join(f"{v:g}" for v in (x1, y1, x2, y2)) + "] (x1, y1, x2, y2)"
    if not (x2 > x1 and y2 > y1):  # NaN fails too
        raise DataError(f"{where}: box {shown} has non-positive width or height")
    tol = BORDER_TOLERANCE
    if x1 < -tol or y1 < -tol or x2 > width + tol or y2 > height + tol:
        raise DataError(f"{where}: box {shown} lies outside the {width}x{height} image "
                        f"(by more than {tol:g} pixel)")
    return [max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height))]


def subset(record: dict[str, Any], keep: np.ndarray, labels: np.ndarray | None = None) -> dict[str, Any]:
    """A copy of ``record`` with only the annotations ``keep`` (a bool mask or indices), labels optionally new.

    Example::

        >>> r = make_record(1, "1.jpg", "1.jpg", 9, 9, [[0, 0, 1, 1], [1, 1, 3, 3]], [0, 1], [False, False], [5, 6])
        >>> subset(r, np.array([False, True]))["ann_ids"].tolist()
        [6]
    """
    out = dict(record)
    for name in ARRAY_FIELDS:
        out[name] = record[name][keep].copy()
    if labels is not None:
        out["labels"] = np.asarray(labels, dtype=np.int64)
    return out


def select_classes(records: list[dict[str, Any]], classes: list[str], keep: list[str],
                   drop_empty: bool = True) -> list[dict[str, Any]]:
    """The annotations of the classes ``keep`` only, their labels remapped to indices into ``keep``.

    Args:
        records: records whose labels index ``classes``.
        classes: the records' class list.
        keep: the classes to keep (each one of ``classes``), in the new label order.
        drop_empty: leave out images without any non-ignored box left (mmdet's ``filter_empty_gt``; default True).

    Returns:
        New records (the input is not changed), in the input order.

    Raises:
        DataError: a class of ``keep`` not in ``classes``.

    Example::

        >>> r = make_record(1, "1.jpg", "1.jpg", 9, 9, [[0, 0, 1, 1], [1, 1, 3, 3]], [0, 1], [False, False], [5, 6])
        >>> [x["labels"].tolist() for x in select_classes([r], ["cat", "dog"], ["dog"])]
        [[0]]
        >>> select_classes([r], ["cat", "dog"], ["cow"])
        Traceback (most recent call last):
        fewray.core.errors.DataError: class 'cow' is not one of the dataset's classes (cat, dog)
    """
    index = {c: i for i, c in enumerate(classes)}
    for name in keep:
        if name not in index:
            raise DataError(f"class '{name}' is not one of the dataset's classes ({', '.join(classes)})")
    remap = np.full(len(classes), -1, dtype=np.int64)
    remap[[index[c] for c in keep]] = np.arange(len(keep))
    out = []
    for rec in records:
        new = remap[rec["labels"]] if len(rec["labels"]) else rec["labels"]
        mask = new >= 0
        if drop_empty and not (mask & ~rec["ignore"]).any():
            continue
        out.append(subset(rec, mask, new[mask]))
    return out


def count_boxes(records: list[dict[str, Any]], num_classes: int | None = None,
                include_ignore: bool = False) -> np.ndarray:
    """Boxes per class ``(num_classes,)`` int64 (ignored boxes left out unless ``include_ignore``).

    Example::

        >>> r = make_record(1, "1.jpg", "1.jpg", 9, 9, [[0, 0, 1, 1], [1, 1, 3, 3]], [1, 1], [False, True], [5, 6])
        >>> count_boxes([r], 2).tolist(), count_boxes([r], 2, include_ignore=True).tolist()
        ([0, 1], [0, 2])
    """
    labels = [r["labels"] if include_ignore else r["labels"][~r["ignore"]] for r in records]
    flat = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    n = num_classes if num_classes is not None else (int(flat.max()) + 1 if len(flat) else 0)
    return np.bincount(flat, minlength=n).astype(np.int64)
