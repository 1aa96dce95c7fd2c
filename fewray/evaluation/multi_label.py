"""Multi-label metrics: mAP and CP/CR/CF1/OP/OR/OF1 (mmpretrain's ``AveragePrecision`` and ``MultiLabelMetric``).

The metrics of the multi-label benchmarks (MS-COCO, VOC 2007) as reported by ML-GCN ("Multi-Label Image
Recognition with Graph Convolutional Networks", Chen et al., CVPR 2019, https://arxiv.org/abs/1904.03582) and
computed by mmpretrain, in percent:

- ``mAP``: the mean over classes of the average precision of each class's ranking of the images,
  ``AP = sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds ``n`` (no interpolation). **Only
  classes with at least one positive image count** (AP is undefined without one; mmpretrain counts such a
  class as AP 0, which lowers mAP on small evaluation sets where some classes are absent). ``nan`` when no
  class has a positive.
- ``CP``, ``CR``, ``CF1``: per-class precision ``TP/(TP+FP)``, recall ``TP/(TP+FN)`` and F1, each averaged over
  **all** classes (mmpretrain's ``average='macro'``; a class with no predicted positive has precision 0, one
  with no positive image recall 0, ``0/0`` counts as 0). ``CF1`` is the mean of the per-class F1 scores
  (mmpretrain's), not ML-GCN's ``2 CP CR / (CP + CR)``.
- ``OP``, ``OR``, ``OF1``: the same over all (image, class) pairs at once (mmpretrain's ``average='micro'``);
  ``OF1 = 2 OP OR / (OP + OR)``.

Which predictions are positive (``CP`` .. ``OF1``; mAP uses the scores only) follows mmpretrain: with
``thr`` a score ``>= thr``; else, with ``topk``, the ``topk`` best classes of each image (ties: lower class
index first); if both are set ``thr`` decides (:class:`UserWarning`), if neither ``thr = 0.5``.

Targets hold ``1`` (positive), ``0`` (negative) or ``-1`` (ignored, mmpretrain's convention for a VOC class
present only as "difficult" objects: the pair counts neither in AP nor in any TP/FP/FN).

Tied scores: AP takes all images of one score at once (as ``sklearn.metrics.average_precision_score``), so it
does not depend on the order of the images; mmpretrain's sort breaks ties in an unspecified order. Without
ties the two agree.

Evaluation follows :class:`~fewray.core.protocols.Evaluator`: ``process`` keeps a shard's scores and targets
as small numpy arrays, ``merge`` concatenates them, ``compute`` computes every metric once over the merged set
(never an average of shard metrics), so any split of the images over workers gives the same numbers.

Example::

    >>> ev = MultiLabelEvaluator()
    >>> scores = [[0.9, 0.2], [0.6, 0.7], [0.1, 0.4]]
    >>> part1, part2 = ev.process(scores[:2], [[0], [1]]), ev.process(scores[2:], [[0]])
    >>> {k: round(v, 2) for k, v in ev.compute(ev.merge([part1, part2])).items()}
    {'mAP': 91.67, 'CP': 75.0, 'CR': 75.0, 'CF1': 75.0, 'OP': 66.67, 'OR': 66.67, 'OF1': 66.67}
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from fewray.core.multi_label import resolve_thr_topk
from fewray.core.protocols import Evaluator

__all__ = [
    "AveragePrecision", "MultiLabelEvaluator", "MultiLabelMetric", "average_precision", "multi_label_metrics",
    "positive_predictions", "precision_recall_f1", "to_score_matrix", "to_target_matrix",
]


def _array(x: Any) -> np.ndarray:
    """A torch tensor (any device), numpy array or nested list as a numpy array."""
    if hasattr(x, "detach"):  # a torch tensor: no torch import needed here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def to_score_matrix(outputs: Any) -> np.ndarray:
    """Scores ``(N, C)`` from a tensor/array/nested list, or from the dicts of a head's ``predict`` (``pred_score``).

    Raises:
        ValueError: not 2-D, or a NaN score.
    """
    if isinstance(outputs, (list, tuple)) and outputs and isinstance(outputs[0], Mapping):
        outputs = np.stack([_array(o["pred_score"]) for o in outputs])
    scores = _array(outputs)
    if scores.ndim != 2:
        raise ValueError(f"scores must be a (N, C) matrix (images, classes), got shape {scores.shape}")
    scores = scores.astype(np.float64 if scores.dtype == np.float64 else np.float32)
    if np.isnan(scores).any():
        raise ValueError("scores hold NaN")
    return scores


def to_target_matrix(targets: Any, num_samples: int, num_classes: int,
                     difficult_as_positive: bool | None = None) -> np.ndarray:
    """Targets as an int8 ``(N, C)`` matrix of ``1`` / ``0`` / ``-1`` (ignored).

    Args:
        targets: one of
            - a ``(N, C)`` tensor/array of ``1``, ``0``, ``-1`` (a multi-hot matrix must be an array or tensor:
              a Python list is always read as class-index lists);
            - a length-``N`` list of class-index lists (``[[0, 3], [], [2]]``; an index twice in one list is
              an error, which catches a multi-hot row given as a list);
            - a length-``N`` list of dicts with ``labels`` and optionally ``difficult_labels`` (the columns of a
              multi-label catalog, :mod:`fewray.data.sources.multilabel`): a class only in
              ``difficult_labels`` becomes ``-1`` (``difficult_as_positive=None``, default), ``1`` (True)
              or ``0`` (False), as mmpretrain's VOC metrics.
        num_samples (int): ``N``; num_classes (int): ``C``.
        difficult_as_positive (bool | None): see above.

    Raises:
        ValueError: another shape or length, values other than 1/0/-1, a class index outside ``0..C-1`` or
            twice in one list.

    Example::

        >>> to_target_matrix([{"labels": [0], "difficult_labels": [2]}], 1, 3).tolist()
        [[1, 0, -1]]
    """
    if not isinstance(targets, (list, tuple)):
        t = _array(targets)
        if t.shape != (num_samples, num_classes):
            raise ValueError(f"targets must have shape ({num_samples}, {num_classes}) (images, classes), got {t.shape}")
        if not np.isin(t, (-1, 0, 1)).all():
            raise ValueError("targets must hold 1 (positive), 0 (negative) or -1 (ignored)")
        return t.astype(np.int8)
    if len(targets) != num_samples:
        raise ValueError(f"targets describe {len(targets)} images but the scores {num_samples}")
    out = np.zeros((num_samples, num_classes), np.int8)
    difficult_value = {None: -1, True: 1, False: 0}[difficult_as_positive]
    for i, t in enumerate(targets):
        if isinstance(t, Mapping):
            labels, difficult = t.get("labels", ()), t.get("difficult_labels") or ()
        else:
            labels, difficult = t, ()
        for values, value in ((difficult, difficult_value), (labels, 1)):  # labels last: they win
            idx = _array(sorted(values) if isinstance(values, (set, frozenset)) else values).reshape(-1)
            if idx.size == 0:
                continue
            if not np.issubdtype(idx.dtype, np.integer):
                raise ValueError(f"targets of image {i} must be class indices (ints), got {idx.dtype}")
            bad = idx[(idx < 0) | (idx >= num_classes)]
            if bad.size:
                raise ValueError(f"targets of image {i} hold class index {int(bad[0])} outside 0..{num_classes - 1}")
            if len(np.unique(idx)) < idx.size:
                raise ValueError(f"targets of image {i} repeat a class index ({idx.tolist()}): a list holds class "
                                 f"indices; give a multi-hot matrix as a numpy array or tensor")
            out[i, idx] = value
    return out


def average_precision(scores: Any, targets: Any) -> np.ndarray:
    """Per-class average precision ``(C,)`` in percent; ``nan`` for a class without a positive image.

    ``AP = sum_n (R_n - R_{n-1}) P_n`` over the distinct scores ``n`` of the class, highest first (tied images
    enter together); pairs with target ``-1`` are left out.

    Args:
        scores: ``(N, C)`` scores (higher = more likely).
        targets: ``(N, C)`` of ``1`` / ``0`` / ``-1``.

    Example::

        >>> average_precision([[0.9], [0.8], [0.7]], [[1], [0], [1]]).round(2).tolist()  # (1/1 + 2/3) / 2
        [83.33]
    """
    scores, targets = to_score_matrix(scores), _array(targets)
    ap = np.full(scores.shape[1], np.nan)
    for k in range(scores.shape[1]):
        valid = targets[:, k] >= 0
        s, t = scores[valid, k], targets[valid, k] == 1
        num_pos = int(t.sum())
        if num_pos == 0:
            continue
        order = np.argsort(-s, kind="stable")
        s, t = s[order], t[order]
        last = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]  # last image of each group of equal scores
        tp = np.cumsum(t)[last]
        precision, recall = tp / (last + 1), tp / num_pos
        ap[k] = float(np.sum(np.diff(recall, prepend=0.0) * precision)) * 100.0
    return ap


def positive_predictions(scores: Any, thr: float | None = None, topk: int | None = None) -> np.ndarray:
    """Boolean ``(N, C)``: which (image, class) pairs are predicted positive, by mmpretrain's thr/topk rule.

    Raises:
        ValueError: ``thr`` outside ``[0, 1]``, ``topk < 1`` or ``topk`` larger than ``C``.

    Example::

        >>> positive_predictions([[0.2, 0.9, 0.5]], topk=2).tolist()
        [[False, True, True]]
    """
    scores = to_score_matrix(scores)
    thr, topk = resolve_thr_topk(thr, topk, "positive_predictions")
    if thr is not None:
        return scores >= thr
    if topk > scores.shape[1]:
        raise ValueError(f"topk={topk} is more than the {scores.shape[1]} classes")
    best = np.argsort(-scores, axis=1, kind="stable")[:, :topk]
    pos = np.zeros(scores.shape, bool)
    np.put_along_axis(pos, best, True, axis=1)
    return pos


def precision_recall_f1(pred_pos: Any, targets: Any) -> dict[str, float]:
    """``CP, CR, CF1, OP, OR, OF1`` (percent) of boolean predictions ``(N, C)`` against targets (1/0/-1).

    Per class ``P = TP / max(TP + FP, 1)``, ``R = TP / max(TP + FN, 1)``, ``F1 = 2PR / (P + R)`` (0 when
    ``P + R = 0``); ``C*`` average them over all classes, ``O*`` pool the counts of all classes first.
    Pairs with target ``-1`` count nowhere.
    """
    targets = _array(targets)
    valid = targets >= 0
    pred = _array(pred_pos).astype(bool) & valid
    gt = (targets == 1) & valid
    tp, n_pred, n_gt = (pred & gt).sum(0), pred.sum(0), gt.sum(0)

    def prf(tp, n_pred, n_gt):
        p = tp / np.maximum(n_pred, 1) * 100.0
        r = tp / np.maximum(n_gt, 1) * 100.0
        f = np.divide(2 * p * r, p + r, out=np.zeros_like(p, dtype=np.float64), where=(p + r) > 0)
        return p, r, f

    cp, cr, cf1 = prf(tp, n_pred, n_gt)
    op, or_, of1 = prf(np.array([tp.sum()]), np.array([n_pred.sum()]), np.array([n_gt.sum()]))
    return {"CP": float(cp.mean()), "CR": float(cr.mean()), "CF1": float(cf1.mean()),
            "OP": float(op[0]), "OR": float(or_[0]), "OF1": float(of1[0])}


def multi_label_metrics(scores: Any, targets: Any, thr: float | None = None,
                        topk: int | None = None) -> dict[str, float]:
    """All seven metrics of one set: ``{"mAP", "CP", "CR", "CF1", "OP", "OR", "OF1"}`` in percent.

    Args:
        scores: ``(N, C)`` scores; targets: ``(N, C)`` of 1/0/-1 or anything :func:`to_target_matrix` reads.
        thr, topk: which predictions are positive (module docstring).
    """
    scores = to_score_matrix(scores)
    targets = to_target_matrix(targets, *scores.shape)
    ap = average_precision(scores, targets)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # mean of an all-nan array
        m_ap = float(np.nanmean(ap)) if not np.isnan(ap).all() else float("nan")
    return {"mAP": m_ap, **precision_recall_f1(positive_predictions(scores, thr, topk), targets)}


class _MultiLabelBase(Evaluator):
    """``process`` / ``merge`` shared by the multi-label evaluators; subclasses pick the metrics."""

    def __init__(self, thr: float | None = None, topk: int | None = None,
                 difficult_as_positive: bool | None = None) -> None:
        self.thr, self.topk = resolve_thr_topk(thr, topk, type(self).__name__)
        self.difficult_as_positive = difficult_as_positive

    def process(self, outputs: Any, targets: Any = None) -> dict[str, np.ndarray]:
        """One shard -> ``{"scores": (n, C) float, "targets": (n, C) int8}`` (plain numpy, picklable).

        Args:
            outputs: scores ``(n, C)`` (tensor, array or list; sigmoid scores of a head) or the list of dicts
                of a head's ``predict`` (their ``pred_score``).
            targets: ``(n, C)`` 1/0/-1, a list of class-index lists, or a list of catalog rows (dicts with
                ``labels`` and ``difficult_labels``); see :func:`to_target_matrix`.

        Raises:
            ValueError: no targets, or scores and targets that do not fit.
        """
        if targets is None:
            raise ValueError(f"{type(self).__name__}.process needs the targets of the images")
        scores = to_score_matrix(outputs)
        return {"scores": scores, "targets": to_target_matrix(targets, *scores.shape, self.difficult_as_positive)}

    def merge(self, partials: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """The shards' scores and targets, concatenated (any order gives the same metrics).

        Raises:
            ValueError: shards with different numbers of classes.
        """
        widths = {p["scores"].shape[1] for p in partials}
        if len(widths) > 1:
            raise ValueError(f"shards disagree on the number of classes: {sorted(widths)}")
        if not partials:
            return {"scores": np.zeros((0, 0), np.float32), "targets": np.zeros((0, 0), np.int8)}
        return {"scores": np.concatenate([p["scores"] for p in partials]),
                "targets": np.concatenate([p["targets"] for p in partials])}

    def _all(self, merged: dict[str, np.ndarray]) -> dict[str, float]:
        if len(merged["scores"]) == 0:
            raise ValueError("no images to evaluate")
        topk = None if self.thr is not None else self.topk  # thr decides (warned once, at construction)
        return multi_label_metrics(merged["scores"], merged["targets"], self.thr, topk)

    def compute(self, merged: dict[str, np.ndarray]) -> dict[str, float]:
        """``{metric: value}`` (percent) over the whole merged set.

        Raises:
            ValueError: no images.
        """
        values = self._all(merged)
        return {m: values[m] for m in self.metrics}


class AveragePrecision(_MultiLabelBase):
    """mAP over the classes that have a positive image (mmpretrain's ``AveragePrecision``; the module docstring
    gives the rule). Arguments as :class:`MultiLabelEvaluator` (``thr``/``topk`` are not used by mAP).

    Example::

        >>> ev = AveragePrecision()
        >>> ev.compute(ev.process([[0.9, 0.1], [0.2, 0.8]], [[0], [0, 1]]))["mAP"]
        100.0
    """

    metrics = ("mAP",)
    modes = {m: "max" for m in metrics}


class MultiLabelMetric(_MultiLabelBase):
    """``CP, CR, CF1, OP, OR, OF1`` of thresholded (``thr``) or top-k predictions (mmpretrain's
    ``MultiLabelMetric`` with ``average='macro'`` and ``'micro'``). Arguments as :class:`MultiLabelEvaluator`.

    Example::

        >>> ev = MultiLabelMetric(topk=1)
        >>> round(ev.compute(ev.process([[0.9, 0.1], [0.2, 0.8]], [[0], [0, 1]]))["OR"], 2)  # 2 of 3 positives found
        66.67
    """

    metrics = ("CP", "CR", "CF1", "OP", "OR", "OF1")
    modes = {m: "max" for m in metrics}


class MultiLabelEvaluator(_MultiLabelBase):
    """All multi-label metrics at once: ``mAP, CP, CR, CF1, OP, OR, OF1`` (percent, larger is better).

    Args:
        thr (float | None): a class is predicted when its score is ``>= thr``. Default None.
        topk (int | None): without ``thr``, the ``topk`` best classes of each image are predicted. Default None.
            Both None: ``thr = 0.5``; both set: ``thr`` decides (:class:`UserWarning`).
        difficult_as_positive (bool | None): for targets given as catalog rows, how a class present only as
            difficult objects counts: None ignored (``-1``, default), True positive, False negative.

    Raises:
        ValueError: ``thr`` outside ``[0, 1]`` or ``topk < 1``; at :meth:`compute`, ``topk`` larger than the
            number of classes or no images.

    Example::

        >>> ev = MultiLabelEvaluator(thr=0.5)
        >>> parts = [ev.process([[0.9, 0.1]], [[0]]), ev.process([[0.2, 0.8]], [[0, 1]])]
        >>> ev.compute(ev.merge(parts))["CR"]  # class 0: 1 of 2 found, class 1: 1 of 1
        75.0
    """

    metrics = ("mAP", "CP", "CR", "CF1", "OP", "OR", "OF1")
    modes = {m: "max" for m in metrics}
