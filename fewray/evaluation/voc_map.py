"""Pascal VOC mAP (``eval_map``, mmdet's / mmfewshot's semantics) and its evaluator.

The metric of the few-shot detection benchmarks on Pascal VOC (TFA, https://arxiv.org/abs/2003.06957; mmfewshot's
``FewShotVOCDataset.evaluate``: ``dataset="voc07"``, ``use_legacy_coordinate=True``, AP50 per class split), with
the meaning of mmdet's ``mmdet.core.evaluation.eval_map``
(https://github.com/open-mmlab/mmdetection/blob/v2.28.2/mmdet/core/evaluation/mean_ap.py):

- per class, the detections of every image are matched greedily by descending score (equal scores in input
  order): a detection whose best-overlapping ground-truth box (IoU from :func:`torchvision.ops.box_iou`) has IoU
  ``>= iou_thr`` is a true positive if that box is not yet matched, a false positive (a duplicate) if it is; one
  whose best box is an ignored one (``bboxes_ignore``: VOC's ``difficult`` objects) counts neither way; one with no
  box at ``iou_thr`` is a false positive.
- ``use_legacy_coordinate``: mmdet v1's pixel convention, a box's width is ``x2 - x1 + 1`` (the IoU of the boxes
  with 1 added to their x2 and y2); areas for ``scale_ranges`` follow it.
- AP of a class from its precision/recall curve: ``"area"`` the area under the interpolated precision envelope
  (VOC 2010+), ``"11points"`` (``dataset="voc07"``) the mean over recall thresholds ``0, 0.1, ..., 1`` (computed
  as ``i * 0.1``, as mmdet and the VOC devkit's Python port, so recall 0.3 falls below threshold
  0.30000000000000004) of the best precision at a recall ``>=`` the threshold.
- ``scale_ranges`` ``[(min, max), ...]`` are box scales, sqrt of the area in pixels (mmdet's: ``(32, 96)`` is the
  area range ``[32², 96²)``): per range, ground truth outside it is ignored and a false positive outside it is not
  counted, giving one AP per range.
- mAP is the mean AP over the classes that have ground truth (0.0 when none has).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_iou

from fewray.core.errors import ConfigError, DataError
from fewray.core.protocols import Evaluator

__all__ = ["VOCDetectionEvaluator", "average_precision", "eval_map"]

_EPS = np.finfo(np.float32).eps  # mmdet's guard against 0/0 in recall and precision


def _array(x: Any, dtype: Any = np.float64) -> np.ndarray:
    """A torch tensor (any device), numpy array or nested list as a numpy array of ``dtype``."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _rows(x: Any, width: int, what: str, error: type[Exception] = ValueError) -> np.ndarray:
    """An ``(n, width)`` float64 array (empty input: ``(0, width)``), finite, or ``error`` naming ``what``."""
    a = _array(x if x is not None else ())
    if a.size == 0:
        return a.reshape(0, width)
    if a.ndim != 2 or a.shape[1] != width:
        raise error(f"{what} must be an (n, {width}) array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise error(f"{what} hold NaN or inf")
    return a


def average_precision(recalls: Any, precisions: Any, mode: str = "area") -> float:
    """AP of one precision/recall curve (detections by descending score) as in mmdet's ``average_precision``.

    Args:
        recalls, precisions: ``(n,)`` cumulative recall and precision after each detection.
        mode (str): ``"area"`` (area under the interpolated precision envelope) or ``"11points"`` (mean of the
            best precision at recall ``>= 0, 0.1, ..., 1``). Default ``"area"``.

    Raises:
        ValueError: another mode, or curves of different shapes.

    Example::

        >>> average_precision([0.5, 0.5, 1.0], [1.0, 0.5, 2 / 3])   # 0.5 * 1 + 0.5 * 2/3
        0.8333333333333333
        >>> round(average_precision([0.5, 0.5, 1.0], [1.0, 0.5, 2 / 3], "11points"), 6)   # (6 * 1 + 5 * 2/3) / 11
        0.848485
    """
    rec, prec = _array(recalls).reshape(-1), _array(precisions).reshape(-1)
    if rec.shape != prec.shape:
        raise ValueError(f"recalls {rec.shape} and precisions {prec.shape} differ in shape")
    if mode == "area":
        mrec = np.concatenate([[0.0], rec, [1.0]])
        mpre = np.maximum.accumulate(np.concatenate([[0.0], prec, [0.0]])[::-1])[::-1]
        steps = np.flatnonzero(mrec[1:] != mrec[:-1])
        return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))
    if mode == "11points":
        total = 0.0
        for thr in np.arange(11) * 0.1:
            above = prec[rec >= thr]
            total += float(above.max()) if above.size else 0.0
        return total / 11
    raise ValueError(f"eval_mode must be 'area' or '11points', got {mode!r}")


def _iou(dets: np.ndarray, gts: np.ndarray, legacy: bool) -> np.ndarray:
    """``(n, m)`` IoU of boxes x1, y1, x2, y2 (legacy: +1 pixel on x2, y2 of both); 0 where the union is 0."""
    a, b = torch.as_tensor(dets[:, :4], dtype=torch.float64), torch.as_tensor(gts[:, :4], dtype=torch.float64)
    if legacy:
        a, b = a.clone(), b.clone()
        a[:, 2:] += 1.0
        b[:, 2:] += 1.0
    return torch.nan_to_num(box_iou(a, b), nan=0.0).numpy()


def _areas(boxes: np.ndarray, extra: float) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0] + extra) * (boxes[:, 3] - boxes[:, 1] + extra)


def _tpfp(dets: np.ndarray, gts: np.ndarray, gts_ignore: np.ndarray, iou_thr: float,
          area_ranges: list[tuple[float, float]] | None, legacy: bool) -> tuple[np.ndarray, np.ndarray]:
    """True/false-positive flags ``(num_ranges, n)`` of one image's detections of one class (input order)."""
    extra = 1.0 if legacy else 0.0
    ranges = area_ranges if area_ranges is not None else [None]
    tp = np.zeros((len(ranges), len(dets)))
    fp = np.zeros((len(ranges), len(dets)))
    if len(dets) == 0:
        return tp, fp
    det_areas = _areas(dets, extra)
    all_gts = np.concatenate([gts, gts_ignore])
    ignored = np.r_[np.zeros(len(gts), bool), np.ones(len(gts_ignore), bool)]
    if len(all_gts) == 0:
        for k, rng in enumerate(ranges):
            fp[k] = 1.0 if rng is None else (det_areas >= rng[0]) & (det_areas < rng[1])
        return tp, fp
    ious = _iou(dets, all_gts, legacy)
    best_iou, best_gt = ious.max(axis=1), ious.argmax(axis=1)
    gt_areas = _areas(all_gts, extra)
    order = np.argsort(-dets[:, 4], kind="stable")
    for k, rng in enumerate(ranges):
        skip = ignored if rng is None else ignored | (gt_areas < rng[0]) | (gt_areas >= rng[1])
        covered = np.zeros(len(all_gts), bool)
        for i in order:
            if best_iou[i] >= iou_thr:
                g = best_gt[i]
                if skip[g]:
                    continue  # matched a difficult box or one outside the range: neither way
                if covered[g]:
                    fp[k, i] = 1.0  # a duplicate
                else:
                    covered[g] = True
                    tp[k, i] = 1.0
            elif rng is None or rng[0] <= det_areas[i] < rng[1]:
                fp[k, i] = 1.0
    return tp, fp


def _check_annotation(ann: Mapping, num_classes: int, what: str) -> dict[str, np.ndarray]:
    """One image's annotation with arrays: ``bboxes (m, 4)``, ``labels (m,)``, ``bboxes_ignore``, ``labels_ignore``.

    Raises:
        DataError: a missing ``bboxes``/``labels``, shapes that do not fit, x2 < x1, or a label outside
            ``0..num_classes-1`` (naming ``what``).
    """
    out = {}
    for boxes_key, labels_key, required in (("bboxes", "labels", True), ("bboxes_ignore", "labels_ignore", False)):
        if required and (boxes_key not in ann or labels_key not in ann):
            raise DataError(f"{what}: the annotation needs '{boxes_key}' and '{labels_key}', got keys {sorted(ann)}")
        boxes = _rows(ann.get(boxes_key), 4, f"{what}: {boxes_key}", DataError)
        labels = _array(ann.get(labels_key, ()), np.int64).reshape(-1)
        if labels.shape != (len(boxes),):
            raise DataError(f"{what}: {labels_key} has {labels.size} values for {len(boxes)} {boxes_key}")
        bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
        if bad.size:
            raise DataError(f"{what}: {labels_key} holds class index {int(labels[bad[0]])} outside "
                            f"0..{num_classes - 1}")
        if ((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])).any():
            raise DataError(f"{what}: {boxes_key} hold a box with x2 < x1 or y2 < y1 (boxes are x1, y1, x2, y2)")
        out[boxes_key], out[labels_key] = boxes, labels
    return out


def eval_map(det_results: Sequence[Sequence[Any]], annotations: Sequence[Mapping],
             scale_ranges: Sequence[tuple[float, float]] | None = None, iou_thr: float = 0.5,
             dataset: str | None = None, use_legacy_coordinate: bool = False,
             eval_mode: str = "area") -> tuple[float | list[float], list[dict]]:
    """mAP of detections over images, with mmdet's ``eval_map`` semantics (module docstring).

    Args:
        det_results (list[list[array]]): per image, per class, an ``(n, 5)`` array x1, y1, x2, y2 (pixels),
            score.
        annotations (list[dict]): per image ``{"bboxes": (m, 4), "labels": (m,) class indices,
            "bboxes_ignore": (k, 4), "labels_ignore": (k,)}`` (the ignore pair optional; difficult boxes).
        scale_ranges (list[tuple[float, float]] | None): ``[(min, max), ...]`` box scales (sqrt of area, pixels);
            None: one range, everything. Default None.
        iou_thr (float): IoU at which a detection matches. Default 0.5.
        dataset (str | None): ``"voc07"`` selects the 11-point AP (mmdet's rule). Default None.
        use_legacy_coordinate (bool): widths ``x2 - x1 + 1`` (mmdet v1, VOC's pixel convention). Default False.
        eval_mode (str): ``"area"`` or ``"11points"`` (``dataset="voc07"`` forces ``"11points"``). Default "area".

    Returns:
        tuple: ``(mean_ap, per_class_results)``; ``mean_ap`` a float in ``[0, 1]`` (a list of floats, one per
        range, with ``scale_ranges``); ``per_class_results[c]`` ``{"num_gts", "num_dets", "recall",
        "precision", "ap"}`` (recall / precision ``(n,)`` over the class's detections by descending score;
        with ``scale_ranges`` ``num_gts`` and ``ap`` are arrays over the ranges and recall / precision
        ``(R, n)``).

    Raises:
        ValueError: different numbers of images in ``det_results`` and ``annotations``, no image, an image with
            another number of classes, a detection array that is not ``(n, 5)``, or an unknown ``eval_mode``.
        DataError: a malformed annotation (naming the image index).

    Example::

        >>> import numpy as np
        >>> dets = [[np.array([[0, 0, 10, 10, 0.9], [20, 20, 30, 30, 0.8], [0, 0, 9, 9, 0.7]])]]
        >>> anns = [{"bboxes": np.array([[0, 0, 10, 10], [20, 20, 30, 30]]), "labels": np.array([0, 0])}]
        >>> mean_ap, results = eval_map(dets, anns)
        >>> mean_ap, results[0]["num_gts"], results[0]["precision"].round(3).tolist()  # the 3rd is a duplicate
        (1.0, 2, [1.0, 1.0, 0.667])
    """
    if len(det_results) != len(annotations):
        raise ValueError(f"det_results has {len(det_results)} images but annotations {len(annotations)}")
    if not det_results:
        raise ValueError("eval_map needs at least one image")
    if eval_mode not in ("area", "11points"):
        raise ValueError(f"eval_mode must be 'area' or '11points', got {eval_mode!r}")
    mode = "11points" if dataset == "voc07" or eval_mode == "11points" else "area"
    num_classes = len(det_results[0])
    extra = 1.0 if use_legacy_coordinate else 0.0
    area_ranges = [(lo ** 2, hi ** 2) for lo, hi in scale_ranges] if scale_ranges is not None else None
    num_ranges = len(area_ranges) if area_ranges is not None else 1

    dets_by_image = []
    for i, per_class in enumerate(det_results):
        if len(per_class) != num_classes:
            raise ValueError(f"det_results[{i}] has {len(per_class)} classes, det_results[0] {num_classes}")
        dets_by_image.append([_rows(d, 5, f"det_results[{i}][{c}]") for c, d in enumerate(per_class)])
    anns = [_check_annotation(a, num_classes, f"annotations[{i}]") for i, a in enumerate(annotations)]

    results = []
    for c in range(num_classes):
        tps, fps, dets = [], [], []
        num_gts = np.zeros(num_ranges, dtype=np.int64)
        for img_dets, ann in zip(dets_by_image, anns):
            gts = ann["bboxes"][ann["labels"] == c]
            gts_ignore = ann["bboxes_ignore"][ann["labels_ignore"] == c]
            tp, fp = _tpfp(img_dets[c], gts, gts_ignore, iou_thr, area_ranges, use_legacy_coordinate)
            tps.append(tp)
            fps.append(fp)
            dets.append(img_dets[c])
            if area_ranges is None:
                num_gts[0] += len(gts)
            else:
                areas = _areas(gts, extra)
                num_gts += [int(((areas >= lo) & (areas < hi)).sum()) for lo, hi in area_ranges]
        scores = np.concatenate(dets)[:, 4]
        order = np.argsort(-scores, kind="stable")
        tp = np.cumsum(np.concatenate(tps, axis=1)[:, order], axis=1)
        fp = np.cumsum(np.concatenate(fps, axis=1)[:, order], axis=1)
        recall = tp / np.maximum(num_gts[:, None], _EPS)
        precision = tp / np.maximum(tp + fp, _EPS)
        ap = np.array([average_precision(recall[k], precision[k], mode) for k in range(num_ranges)])
        if area_ranges is None:
            results.append({"num_gts": int(num_gts[0]), "num_dets": len(scores), "recall": recall[0],
                            "precision": precision[0], "ap": float(ap[0])})
        else:
            results.append({"num_gts": num_gts, "num_dets": len(scores), "recall": recall,
                            "precision": precision, "ap": ap})

    all_gts = np.array([np.atleast_1d(r["num_gts"]) for r in results]).reshape(num_classes, num_ranges)
    all_ap = np.array([np.atleast_1d(r["ap"]) for r in results]).reshape(num_classes, num_ranges)
    means = [float(all_ap[all_gts[:, k] > 0, k].mean()) if (all_gts[:, k] > 0).any() else 0.0
             for k in range(num_ranges)]
    return (means if area_ranges is not None else means[0]), results


class VOCDetectionEvaluator(Evaluator):
    """VOC mAP at one IoU (``AP50`` by default) over all classes and per class split, in percent, like mmfewshot's
    ``FewShotVOCDataset.evaluate(metric="mAP", class_splits=...)`` (:func:`eval_map` with ``dataset="voc07"``,
    ``use_legacy_coordinate=True``).

    Reports ``AP{iou}`` (``AP50``: the mAP over the classes with ground truth), ``{SPLIT}_AP{iou}`` per class split
    (``SPLIT`` the split's name without ``_CLASSES``: the mean AP of the split's classes that have ground truth in
    the evaluated images, NaN if none has; mmfewshot averages all of the split's classes, the same whenever each
    has ground truth, as on VOC2007 test), and ``AP{iou}_{class name}`` for each class with ground truth. Only the
    images ``process`` saw count (their ground truth and detections). ``last_summary`` is a per-class table of
    the last ``compute``. A pickled copy (what a Ray task receives) leaves the annotations behind: it can
    ``process`` and ``merge`` but not ``compute``.

    Args:
        annotations_by_image_id (dict): image id -> ``{"bboxes": (m, 4) x1, y1, x2, y2 pixels, "labels": (m,)
            class indices 0..C-1, "bboxes_ignore": (k, 4), "labels_ignore": (k,)}`` (difficult objects in the
            ignore pair, which is optional). The driver keeps them; ``process`` does not need them.
        num_classes (int): ``C``.
        class_names (list[str]): ``C`` names, in class-index order.
        class_splits (dict[str, list[int | str]] | None): split name -> class indices (or names). Default None.
        iou_thr (float): Default 0.5.
        dataset (str | None): ``"voc07"`` (11-point AP, default) or None (area AP).
        use_legacy_coordinate (bool): Default True (VOC's ``+1`` pixel widths).

    Raises:
        ConfigError: ``class_names`` not ``num_classes`` long, an empty split or one naming an unknown class.
        DataError: a malformed annotation (naming the image id).

    Example::

        >>> import numpy as np
        >>> anns = {"a": {"bboxes": np.array([[0, 0, 9, 9]]), "labels": np.array([0])},
        ...         "b": {"bboxes": np.array([[5, 5, 20, 20]]), "labels": np.array([1])}}
        >>> ev = VOCDetectionEvaluator(anns, 2, ["cat", "dog"], class_splits={"NOVEL_CLASSES": ["dog"]})
        >>> parts = [ev.process([{"image_id": "a", "boxes": [[0, 0, 9, 9]], "scores": [0.9], "labels": [0]}]),
        ...          ev.process([{"image_id": "b", "boxes": np.zeros((0, 4)), "scores": [], "labels": []}])]
        >>> ev.compute(ev.merge(parts))
        {'AP50': 50.0, 'NOVEL_AP50': 0.0, 'AP50_cat': 100.0, 'AP50_dog': 0.0}
    """

    metrics = ("AP50",)
    modes = {"AP50": "max"}

    def __init__(self, annotations_by_image_id: dict, num_classes: int, class_names: Sequence[str],
                 class_splits: dict[str, list[int]] | None = None, iou_thr: float = 0.5, dataset: str | None = "voc07",
                 use_legacy_coordinate: bool = True) -> None:
        self.num_classes = int(num_classes)
        self.class_names = [str(n) for n in class_names]
        if len(self.class_names) != self.num_classes:
            raise ConfigError(f"class_names has {len(self.class_names)} names for num_classes={self.num_classes}")
        self.annotations = {image_id: _check_annotation(ann, self.num_classes, f"image {image_id}")
                            for image_id, ann in annotations_by_image_id.items()}
        self.iou_thr, self.dataset, self.use_legacy_coordinate = float(iou_thr), dataset, bool(use_legacy_coordinate)
        self.key = f"AP{int(round(self.iou_thr * 100)):02d}"
        self.class_splits = self._check_splits(class_splits or {})
        self.metrics = (self.key,) + tuple(f"{self._prefix(s)}_{self.key}" for s in self.class_splits)
        self.modes = {m: "max" for m in self.metrics}
        self.last_summary = ""

    @staticmethod
    def _prefix(split: str) -> str:
        return split[: -len("_CLASSES")] if split.endswith("_CLASSES") else split

    def __getstate__(self) -> dict:
        """The pickled state: everything but the annotations (a Ray task only runs ``process``)."""
        return {**self.__dict__, "annotations": None}

    def _check_splits(self, class_splits: Mapping[str, Sequence]) -> dict[str, tuple[int, ...]]:
        out: dict[str, tuple[int, ...]] = {}
        for split, members in class_splits.items():
            ids = []
            for m in members:
                if isinstance(m, str):
                    if m not in self.class_names:
                        raise ConfigError(f"class_splits['{split}']: class '{m}' is not one of class_names")
                    ids.append(self.class_names.index(m))
                elif 0 <= int(m) < self.num_classes:
                    ids.append(int(m))
                else:
                    raise ConfigError(f"class_splits['{split}']: class index {m} outside 0..{self.num_classes - 1}")
            if not ids:
                raise ConfigError(f"class_splits['{split}'] has no classes")
            out[str(split)] = tuple(sorted(set(ids)))
        if len({self._prefix(s) for s in out}) < len(out):
            raise ConfigError(f"class_splits {sorted(out)}: two splits report under the same name")
        return out

    def process(self, outputs: Sequence[Mapping], targets: Any = None) -> dict[Any, np.ndarray]:
        """One shard's detections -> ``{image id: (n, 6) float64 array x1, y1, x2, y2, score, class}``.

        Args:
            outputs (list[dict]): per image ``{"image_id", "boxes": (N, 4) x1, y1, x2, y2 pixels, "scores": (N,),
                "labels": (N,) class indices 0..C-1}`` (numpy, torch or lists; ``N`` may be 0).
            targets: unused.

        Raises:
            ValueError: a missing key, mismatched or non-finite arrays, a class index outside ``0..C-1``, or an
                image twice.
        """
        out: dict[Any, np.ndarray] = {}
        for i, o in enumerate(outputs):
            missing = [k for k in ("image_id", "boxes", "scores", "labels") if k not in o]
            if missing:
                raise ValueError(f"detection output {i} has no {', '.join(repr(k) for k in missing)}")
            image_id = o["image_id"].item() if hasattr(o["image_id"], "item") else o["image_id"]
            what = f"detections of image {image_id}"
            if image_id in out:
                raise ValueError(f"image {image_id} appears twice in one shard's outputs")
            boxes = _rows(o["boxes"], 4, f"{what}: boxes")
            scores = _array(o["scores"]).reshape(-1)
            labels = _array(o["labels"], np.int64).reshape(-1)
            if scores.shape != (len(boxes),) or labels.shape != (len(boxes),):
                raise ValueError(f"{what}: {len(boxes)} boxes but {scores.size} scores and {labels.size} labels")
            if not np.isfinite(scores).all():
                raise ValueError(f"{what}: scores hold NaN or inf")
            if ((labels < 0) | (labels >= self.num_classes)).any():
                raise ValueError(f"{what}: a label outside 0..{self.num_classes - 1}")
            out[image_id] = np.concatenate([boxes, scores[:, None], labels[:, None]], axis=1)
        return out

    def merge(self, partials: Sequence[Mapping[Any, np.ndarray]]) -> dict[Any, np.ndarray]:
        """The union of the shards' dicts (any order of shards gives the same metrics).

        Raises:
            ValueError: an image evaluated in two shards (named).
        """
        merged: dict[Any, np.ndarray] = {}
        for part in partials:
            for image_id, dets in part.items():
                if image_id in merged:
                    raise ValueError(f"image {image_id} was evaluated twice (in two shards)")
                merged[image_id] = dets
        return merged

    def compute(self, merged: Mapping[Any, np.ndarray]) -> dict[str, float]:
        """``{metric: value}`` in percent over the merged images (in the order of ``annotations_by_image_id``).

        Raises:
            ValueError: no images. DataError: an image id without an annotation (named).
            RuntimeError: called on a pickled copy (no annotations).
        """
        if not merged:
            raise ValueError("no images to evaluate")
        if self.annotations is None:
            raise RuntimeError("this VOCDetectionEvaluator is a pickled copy without its annotations: "
                               "call compute on the driver's evaluator")
        unknown = [i for i in merged if i not in self.annotations]
        if unknown:
            raise DataError(f"image id {unknown[0]!r} of the detections has no annotation")
        image_ids = [i for i in self.annotations if i in merged]
        det_results = [[merged[i][merged[i][:, 5] == c, :5] for c in range(self.num_classes)] for i in image_ids]
        mean_ap, per_class = eval_map(det_results, [self.annotations[i] for i in image_ids], iou_thr=self.iou_thr,
                                      dataset=self.dataset, use_legacy_coordinate=self.use_legacy_coordinate)
        has_gt = [r["num_gts"] > 0 for r in per_class]
        out = {self.key: mean_ap * 100.0}
        for split, ids in self.class_splits.items():
            aps = [per_class[c]["ap"] for c in ids if has_gt[c]]
            out[f"{self._prefix(split)}_{self.key}"] = float(np.mean(aps)) * 100.0 if aps else float("nan")
        for c, r in enumerate(per_class):
            if has_gt[c]:
                out[f"{self.key}_{self.class_names[c]}"] = r["ap"] * 100.0
        rows = [f"{'class':<20}{'gts':>7}{'dets':>7}{'recall':>9}{'ap':>9}"]
        for name, r in zip(self.class_names, per_class):
            recall = float(r["recall"][-1]) if len(r["recall"]) else 0.0
            rows.append(f"{name:<20}{r['num_gts']:>7}{r['num_dets']:>7}{recall:>9.3f}{r['ap']:>9.3f}")
        rows.append(f"{'mAP':<20}{'':>7}{'':>7}{'':>9}{mean_ap:>9.3f}")
        self.last_summary = "\n".join(rows)
        return out
