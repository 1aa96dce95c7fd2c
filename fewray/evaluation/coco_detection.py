"""COCO box AP by class split (pycocotools ``COCOeval``), as mmfewshot's ``FewShotCocoDataset.evaluate``.

The metrics of the few-shot detection benchmarks on COCO (TFA, "Frustratingly Simple Few-Shot Object
Detection", Wang et al., ICML 2020, https://arxiv.org/abs/2003.06957; mmfewshot,
https://github.com/open-mmlab/mmfewshot): the COCO box AP of every category (``ALL``) and of each class split
(``BASE_CLASSES``, ``NOVEL_CLASSES``), each a separate ``COCOeval`` run restricted to the split's categories,
in percent. The numbers are pycocotools' own (https://github.com/cocodataset/cocoapi): this module only
converts boxes, ships detections between Ray tasks and the driver, and reads ``COCOeval``'s results.

- :func:`coco_gt_from_records`: a COCO ground-truth dict from per-image records (boxes x1, y1, x2, y2).
- :class:`CocoDetectionEvaluator`: an :class:`~fewray.core.protocols.Evaluator`; ``process`` (per shard, no
  ground truth needed) turns a model's per-image detections into COCO result dicts, ``merge`` concatenates
  them, ``compute`` (driver, which keeps the ground truth) runs ``COCOeval`` once over all merged images.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from fewray.core.errors import ConfigError, DataError
from fewray.core.protocols import Evaluator

__all__ = ["ALL_METRICS", "SPLIT_METRICS", "CocoDetectionEvaluator", "coco_gt_from_records"]

#: the ALL split's metrics: ``COCOeval.stats[0:6]`` (AP at IoU .50:.95, .50, .75; small, medium, large)
ALL_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
#: each class split's metrics, prefixed ``{SPLIT}_`` (``COCOeval.stats[0:3]``)
SPLIT_METRICS = ("AP", "AP50", "AP75")


def _array(x: Any, dtype: Any) -> np.ndarray:
    """A torch tensor (any device), numpy array or nested list as a numpy array of ``dtype``."""
    if hasattr(x, "detach"):  # a torch tensor: no torch import needed here
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _boxes(x: Any, what: str, error: type[Exception]) -> np.ndarray:
    """``(M, 4)`` float64 boxes x1, y1, x2, y2 (an empty input gives ``(0, 4)``); ``error`` when malformed."""
    boxes = _array(x, np.float64)
    if boxes.size == 0:
        return boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise error(f"{what}: boxes must be an (M, 4) array x1, y1, x2, y2, got shape {boxes.shape}")
    if not np.isfinite(boxes).all():
        raise error(f"{what}: boxes hold NaN or inf")
    bad = np.flatnonzero((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]))
    if bad.size:
        raise error(f"{what}: box {boxes[bad[0]].tolist()} has x2 < x1 or y2 < y1 (boxes are x1, y1, x2, y2)")
    return boxes


def _vector(x: Any, n: int, dtype: Any, name: str, what: str, error: type[Exception]) -> np.ndarray:
    """A length-``n`` vector or ``error`` naming ``name`` and ``what``."""
    v = _array(x, dtype).reshape(-1) if x is not None else np.zeros(0, dtype)
    if v.shape != (n,):
        raise error(f"{what}: {name} must have one value per box ({n}), got shape {v.shape}")
    return v


def _silent(fn, *args):
    """``fn(*args)`` with pycocotools' prints captured: ``(result, printed text)``."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        result = fn(*args)
    return result, buf.getvalue()


def coco_gt_from_records(images: Sequence[Mapping], categories: Sequence[Mapping]) -> dict:
    """A COCO-format ground-truth dict (``images``, ``annotations``, ``categories``) from per-image records.

    Args:
        images (list[dict]): one record per image: ``image_id`` (int), ``width``, ``height`` (pixels),
            ``boxes`` ``(M, 4)`` x1, y1, x2, y2 in pixels, ``labels`` ``(M,)`` category ids, optional
            ``iscrowd`` ``(M,)`` bool (default all False) and ``areas`` ``(M,)`` (pixels², default the box
            areas; COCO's own are the segment areas). numpy arrays, torch tensors or lists.
        categories (list[dict]): ``{"id": int, "name": str, ...}`` per category (copied as given).

    Returns:
        dict: ``images`` ``[{id, width, height}]``, ``annotations`` ``[{id, image_id, category_id, bbox: [x, y,
        w, h], area, iscrowd}]`` with ids ``1..`` in record order, ``categories``.

    Raises:
        DataError: a record without ``image_id`` / ``width`` / ``height``, an image id twice, a category without
            ``id`` / ``name`` or an id twice, boxes that are not ``(M, 4)`` x1 <= x2, y1 <= y2, labels / iscrowd
            / areas of another length, or a label that is not a category id (each naming the image).

    Example::

        >>> gt = coco_gt_from_records(
        ...     [{"image_id": 7, "width": 100, "height": 80, "boxes": [[10, 10, 50, 40]], "labels": [1]}],
        ...     [{"id": 1, "name": "cat"}])
        >>> gt["annotations"]
        [{'id': 1, 'image_id': 7, 'category_id': 1, 'bbox': [10.0, 10.0, 40.0, 30.0], 'area': 1200.0, 'iscrowd': 0}]
    """
    cats = _check_categories(categories, "categories")
    out_images, annotations, seen = [], [], set()
    for i, rec in enumerate(images):
        for key in ("image_id", "width", "height"):
            if key not in rec:
                raise DataError(f"image record {i} has no '{key}'")
        image_id = int(rec["image_id"])
        what = f"image {image_id}"
        if image_id in seen:
            raise DataError(f"{what} appears twice in the image records")
        seen.add(image_id)
        out_images.append({"id": image_id, "width": int(rec["width"]), "height": int(rec["height"])})
        boxes = _boxes(rec.get("boxes", ()), what, DataError)
        n = len(boxes)
        labels = _vector(rec.get("labels", ()), n, np.int64, "labels", what, DataError)
        crowd = _vector(rec.get("iscrowd", np.zeros(n, bool)), n, bool, "iscrowd", what, DataError)
        wh = boxes[:, 2:] - boxes[:, :2]
        areas = _vector(rec["areas"], n, np.float64, "areas", what, DataError) if rec.get("areas") is not None \
            else wh[:, 0] * wh[:, 1]
        for k in range(n):
            if int(labels[k]) not in cats:
                raise DataError(f"{what}: label {int(labels[k])} is not a category id ({sorted(cats)})")
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(labels[k]),
                                "bbox": [float(boxes[k, 0]), float(boxes[k, 1]), float(wh[k, 0]), float(wh[k, 1])],
                                "area": float(areas[k]), "iscrowd": int(crowd[k])})
    return {"images": out_images, "annotations": annotations, "categories": [dict(c) for c in categories]}


def _check_categories(categories: Sequence[Mapping], where: str) -> dict[int, str]:
    """``{category id: name}``; DataError on a category without id/name or an id twice."""
    cats: dict[int, str] = {}
    for i, c in enumerate(categories):
        if "id" not in c or "name" not in c:
            raise DataError(f"{where}: category {i} needs an 'id' and a 'name', got keys {sorted(c)}")
        if int(c["id"]) in cats:
            raise DataError(f"{where}: category id {int(c['id'])} appears twice")
        cats[int(c["id"])] = str(c["name"])
    if not cats:
        raise DataError(f"{where}: no categories")
    return cats


def _slim_gt(gt: Mapping) -> dict:
    """What ``COCOeval`` needs of a COCO gt dict, checked; annotation ids renumbered ``1..`` (pycocotools counts
    a match to an annotation with id 0 as a miss, and Roboflow exports number them from 0)."""
    if not isinstance(gt, Mapping):
        raise DataError(f"the COCO ground truth must be a dict (a loaded annotation file), got {type(gt).__name__}")
    for key in ("images", "annotations", "categories"):
        if key not in gt:
            raise DataError(f"the COCO ground truth has no '{key}' list")
    cats = _check_categories(gt["categories"], "the COCO ground truth")
    images, image_ids = [], set()
    for img in gt["images"]:
        if "id" not in img:
            raise DataError(f"an image of the COCO ground truth has no 'id' (keys {sorted(img)})")
        if int(img["id"]) in image_ids:
            raise DataError(f"image id {int(img['id'])} appears twice in the COCO ground truth")
        image_ids.add(int(img["id"]))
        images.append({"id": int(img["id"]), "width": img.get("width"), "height": img.get("height")})
    annotations = []
    for n, ann in enumerate(gt["annotations"], 1):
        name = f"annotation {ann.get('id', f'#{n}')} of the COCO ground truth"
        for key in ("image_id", "category_id", "bbox", "area", "iscrowd"):
            if key not in ann:
                raise DataError(f"{name} has no '{key}'")
        if int(ann["category_id"]) not in cats:
            raise DataError(f"{name} has category_id {ann['category_id']}, not one of the categories")
        if int(ann["image_id"]) not in image_ids:
            raise DataError(f"{name} has image_id {ann['image_id']}, not one of the images")
        bbox = [float(v) for v in ann["bbox"]]
        if len(bbox) != 4 or bbox[2] < 0 or bbox[3] < 0:
            raise DataError(f"{name} has bbox {ann['bbox']}: not [x, y, w, h] with w, h >= 0")
        annotations.append({"id": n, "image_id": int(ann["image_id"]), "category_id": int(ann["category_id"]),
                            "bbox": bbox, "area": float(ann["area"]), "iscrowd": int(ann["iscrowd"])})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": i, "name": name} for i, name in cats.items()]}


class CocoDetectionEvaluator(Evaluator):
    """COCO box AP (pycocotools ``COCOeval``, ``iouType="bbox"``) of all categories and of each class split,
    in percent, like mmfewshot's ``FewShotCocoDataset.evaluate(metric="bbox", class_splits=...)``.

    Reports ``AP, AP50, AP75, APs, APm, APl`` over every category and ``{SPLIT}_AP, {SPLIT}_AP50,
    {SPLIT}_AP75`` per class split, ``SPLIT`` the split's name without ``_CLASSES`` (``BASE_AP``,
    ``NOVEL_AP50``); each split is its own ``COCOeval`` with ``params.catIds`` = its categories and
    ``params.imgIds`` = the evaluated images (every image ``process`` saw, with or without detections; other
    images of ``gt`` are left out). A value COCOeval leaves undefined (-1: no ground truth of the split, or of
    that size, in the evaluated images) is NaN. With ``classwise`` also ``AP_{category name}`` (AP at IoU
    .50:.95 from ``eval["precision"]``) and ``AP50_{category name}`` (at IoU .50) for each category with ground
    truth in the evaluated images. No
    detection at all gives 0.0 for every AP that has ground truth. Crowd regions (``iscrowd=1``) follow
    COCOeval: a detection on one is neither a true nor a false positive.

    The evaluator keeps a slim copy of ``gt`` (boxes, no segmentations) for ``compute``; a pickled copy (what a
    Ray task receives to run ``process``) leaves it behind and can ``process`` and ``merge`` but not
    ``compute``. ``last_summary`` holds the COCOeval summary tables of the last ``compute``.

    Args:
        gt (dict): COCO-format ground truth (a loaded ``instances_*.json``, or :func:`coco_gt_from_records`):
            ``images`` (``id``), ``annotations`` (``image_id``, ``category_id``, ``bbox`` [x, y, w, h] pixels,
            ``area``, ``iscrowd``), ``categories`` (``id``, ``name``).
        class_splits (dict[str, list[int | str]] | None): split name -> its category ids (or names), e.g.
            ``{"BASE_CLASSES": [...], "NOVEL_CLASSES": [...]}``. Default None: the ALL split only.
        classwise (bool): also report ``AP_{name}`` and ``AP50_{name}`` per category. Default False.

    Raises:
        DataError: ``gt`` is not a COCO dict (a missing list or key, an annotation of an unknown image or
            category, a malformed bbox; the message names it).
        ConfigError: an empty split, a category id or name of a split that ``gt`` does not have, or two
            splits with the same prefix.

    Example::

        >>> gt = coco_gt_from_records([{"image_id": 1, "width": 100, "height": 100, "boxes": [[10, 10, 60, 60]],
        ...                             "labels": [1]}], [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}])
        >>> ev = CocoDetectionEvaluator(gt, class_splits={"NOVEL_CLASSES": [1]})
        >>> part = ev.process([{"image_id": 1, "boxes": [[10, 10, 60, 60], [70, 70, 90, 90]],
        ...                     "scores": [0.5, 0.9], "labels": [1, 1]}])   # a false positive ranked first
        >>> m = ev.compute(ev.merge([part]))
        >>> m["AP"], m["NOVEL_AP50"]   # precision 1/2 at every recall
        (50.0, 50.0)
    """

    metrics = ALL_METRICS
    modes = {m: "max" for m in ALL_METRICS}

    def __init__(self, gt: dict, class_splits: dict[str, list[int]] | None = None, classwise: bool = False) -> None:
        self.gt: dict | None = _slim_gt(gt)
        self.categories = {c["id"]: c["name"] for c in self.gt["categories"]}
        self.class_splits = self._check_splits(class_splits or {})
        self.classwise = bool(classwise)
        prefixes = [self._prefix(s) for s in self.class_splits]
        self.metrics = ALL_METRICS + tuple(f"{p}_{m}" for p in prefixes for m in SPLIT_METRICS)
        self.modes = {m: "max" for m in self.metrics}
        self.last_summary = ""
        self._coco: COCO | None = None

    @staticmethod
    def _prefix(split: str) -> str:
        return split[: -len("_CLASSES")] if split.endswith("_CLASSES") else split

    def _check_splits(self, class_splits: Mapping[str, Sequence]) -> dict[str, tuple[int, ...]]:
        by_name = {name: cid for cid, name in self.categories.items()}
        out: dict[str, tuple[int, ...]] = {}
        prefixes: dict[str, str] = {}
        for split, members in class_splits.items():
            prefix = self._prefix(str(split))
            if prefix in prefixes:
                raise ConfigError(f"class_splits: '{split}' and '{prefixes[prefix]}' both report as '{prefix}_AP'")
            prefixes[prefix] = str(split)
            ids = []
            for m in members:
                if isinstance(m, str):
                    if m not in by_name:
                        raise ConfigError(f"class_splits['{split}']: category '{m}' is not in the ground truth")
                    ids.append(by_name[m])
                elif int(m) in self.categories:
                    ids.append(int(m))
                else:
                    raise ConfigError(f"class_splits['{split}']: category id {m} is not in the ground truth")
            if not ids:
                raise ConfigError(f"class_splits['{split}'] has no categories")
            out[str(split)] = tuple(sorted(set(ids)))
        return out

    def __getstate__(self) -> dict:
        """The pickled state: everything but the ground truth (a Ray task only runs ``process``)."""
        state = dict(self.__dict__)
        state["gt"], state["_coco"] = None, None
        return state

    def process(self, outputs: Sequence[Mapping], targets: Any = None) -> dict[str, list]:
        """One shard's detections -> ``{"results": [COCO result dicts], "image_ids": [int]}`` (picklable).

        Args:
            outputs (list[dict]): per image ``{"image_id": int, "boxes": (N, 4) x1, y1, x2, y2 in the original
                image's pixels, "scores": (N,), "labels": (N,) category ids}`` (numpy, torch or lists; ``N`` may
                be 0: the image still counts as evaluated).
            targets: unused (the driver holds the ground truth).

        Returns:
            dict: ``results``: ``{"image_id", "category_id", "bbox": [x, y, w, h] (rounded to 1/1000 px),
            "score"}`` per detection; ``image_ids``: the images processed, in order.

        Raises:
            ValueError: an output without one of the keys, boxes / scores / labels of mismatched shapes or not
                finite, a label that is not a category id, or an image twice in the shard.
        """
        results: list[dict] = []
        image_ids: list[int] = []
        seen: set[int] = set()
        for i, out in enumerate(outputs):
            missing = [k for k in ("image_id", "boxes", "scores", "labels") if k not in out]
            if missing:
                raise ValueError(f"detection output {i} has no {', '.join(repr(k) for k in missing)}")
            image_id = int(out["image_id"])
            what = f"detections of image {image_id}"
            if image_id in seen:
                raise ValueError(f"image {image_id} appears twice in one shard's outputs")
            seen.add(image_id)
            boxes = _boxes(out["boxes"], what, ValueError)
            scores = _vector(out["scores"], len(boxes), np.float64, "scores", what, ValueError)
            labels = _vector(out["labels"], len(boxes), np.int64, "labels", what, ValueError)
            if not np.isfinite(scores).all():
                raise ValueError(f"{what}: scores hold NaN or inf")
            unknown = sorted(set(labels.tolist()) - set(self.categories))
            if unknown:
                raise ValueError(f"{what}: label {unknown[0]} is not a category id of the ground truth")
            xywh = np.round(np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1), 3)
            results.extend({"image_id": image_id, "category_id": int(c), "bbox": b, "score": float(s)}
                           for b, s, c in zip(xywh.tolist(), scores.tolist(), labels.tolist()))
            image_ids.append(image_id)
        return {"results": results, "image_ids": image_ids}

    def merge(self, partials: Sequence[Mapping[str, list]]) -> dict[str, list]:
        """The shards' results and image ids, concatenated (any order of shards gives the same metrics).

        Raises:
            ValueError: an image evaluated in two shards (named).
        """
        results: list[dict] = []
        image_ids: list[int] = []
        seen: set[int] = set()
        for part in partials:
            for image_id in part["image_ids"]:
                if image_id in seen:
                    raise ValueError(f"image {image_id} was evaluated twice (in two shards)")
                seen.add(image_id)
            image_ids.extend(part["image_ids"])
            results.extend(part["results"])
        return {"results": results, "image_ids": image_ids}

    def _coco_gt(self) -> COCO:
        if self.gt is None:
            raise RuntimeError("this CocoDetectionEvaluator is a pickled copy without its ground truth: "
                               "call compute on the driver's evaluator")
        if self._coco is None:
            coco = COCO()
            coco.dataset = self.gt
            _silent(coco.createIndex)
            self._coco = coco
        return self._coco

    def _coco_dt(self, coco_gt: COCO, results: list[dict]) -> COCO:
        if results:  # loadRes adds keys to the dicts it gets: give it copies
            return _silent(coco_gt.loadRes, [dict(r, bbox=list(r["bbox"])) for r in results])[0]
        empty = COCO()  # loadRes cannot load an empty list
        empty.dataset = {"images": list(coco_gt.dataset["images"]),
                         "categories": list(coco_gt.dataset["categories"]), "annotations": []}
        _silent(empty.createIndex)
        return empty

    def compute(self, merged: Mapping[str, list]) -> dict[str, float]:
        """``{metric: value}`` in percent over every merged image (NaN where COCOeval gives -1).

        Raises:
            ValueError: no images were evaluated.
            DataError: an evaluated image id that the ground truth does not have (named).
            RuntimeError: called on a pickled copy (no ground truth).
        """
        image_ids = sorted(merged["image_ids"])
        if not image_ids:
            raise ValueError("no images to evaluate")
        coco_gt = self._coco_gt()
        unknown = sorted(set(image_ids) - set(coco_gt.imgs))
        if unknown:
            raise DataError(f"image id {unknown[0]} of the detections is not in the ground truth's images")
        results = sorted(merged["results"], key=lambda r: r["image_id"])  # stable: per-image order kept
        coco_dt = self._coco_dt(coco_gt, results)
        all_ids = sorted(self.categories)
        # One COCOeval over every category: COCOeval evaluates and accumulates each category on its own, so a class
        # split's AP / AP50 / AP75 are its categories' slice of the precision array, averaged as COCOeval.summarize
        # averages (the same numbers as a COCOeval restricted to the split, at a third of the driver's time).
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.catIds = all_ids
        ev.params.imgIds = image_ids
        _silent(ev.evaluate)
        _silent(ev.accumulate)
        summaries = [f"ALL ({len(all_ids)} categories, {len(image_ids)} images)\n" + _silent(ev.summarize)[1]]
        out: dict[str, float] = {name: _percent(ev.stats[k]) for k, name in enumerate(ALL_METRICS)}
        precision = ev.eval["precision"]  # (T, R, K, A, M): area "all" is 0, maxDets 100 is last
        for split, ids in self.class_splits.items():
            prefix = self._prefix(split) + "_"
            cols = [all_ids.index(c) for c in ids]
            for name, value in zip(SPLIT_METRICS, split_stats(precision, cols, ev.params.iouThrs)):
                out[prefix + name] = value
            summaries.append(f"{split} ({len(ids)} categories, {len(image_ids)} images): " + ", ".join(
                f"{name} {out[prefix + name]:.2f}" for name in SPLIT_METRICS))
        if self.classwise:
            for k, cid in enumerate(all_ids):
                p = precision[:, :, k, 0, -1]
                if (p > -1).any():
                    out[f"AP_{self.categories[cid]}"] = float(p[p > -1].mean()) * 100.0
                    p50 = p[0]  # IoU threshold 0.50 (params.iouThrs[0])
                    out[f"AP50_{self.categories[cid]}"] = float(p50[p50 > -1].mean()) * 100.0
        self.last_summary = "\n".join(summaries)
        return out


def split_stats(precision: np.ndarray, cols: list[int], iou_thrs: np.ndarray) -> tuple[float, float, float]:
    """``(AP, AP50, AP75)`` in percent of the categories at positions ``cols`` of COCOeval's accumulated
    ``precision`` array ``(T, R, K, A, M)``, as ``COCOeval.summarize`` averages them (area all, 100 detections,
    entries of -1 left out; NaN when none is defined).

    Example::

        >>> p = np.full((10, 2, 3, 4, 3), -1.0)
        >>> p[:, :, 0, 0, -1], p[:, :, 1, 0, -1] = 0.5, 1.0      # category 2 has no ground truth (-1)
        >>> split_stats(p, [0, 1], np.linspace(0.5, 0.95, 10)), split_stats(p, [2], np.linspace(0.5, 0.95, 10))[0]
        ((75.0, 75.0, 75.0), nan)
    """
    s = precision[:, :, cols, 0, -1]
    out = []
    for t in (None, 0.5, 0.75):
        x = s if t is None else s[np.where(np.isclose(iou_thrs, t))[0]]
        out.append(float(x[x > -1].mean()) * 100.0 if (x > -1).any() else math.nan)
    return out[0], out[1], out[2]


def _percent(stat: float) -> float:
    """A COCOeval statistic (a fraction, -1 when undefined) in percent; NaN when undefined."""
    return float(stat) * 100.0 if stat > -1 else math.nan
