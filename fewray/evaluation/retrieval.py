"""Retrieval metrics: Recall@K (mmpretrain's ``RetrievalRecall``) and mAP@R (Musgrave et al. 2020), per query.

For a query with class ``y`` ranked against a labelled gallery (descending similarity, equal similarities in
gallery order, the query itself left out when queries and gallery are the same set):

- ``Recall@K`` (mmpretrain's ``RetrievalRecall``,
  https://mmpretrain.readthedocs.io/en/latest/api/generated/mmpretrain.evaluation.RetrievalRecall.html): 1 if
  any of the first ``K`` gallery items has class ``y``, else 0; reported as the percentage of queries
  (all queries count, also those whose class has no other gallery item: they score 0).
- ``mAP@R`` ("A Metric Learning Reality Check", Musgrave, Belongie and Lim, ECCV 2020,
  https://arxiv.org/abs/2003.08505): with ``R`` the number of gallery items of class ``y`` (the query itself not
  counted), ``AP@R = (1/R) * sum_{i=1..R} P(i) * rel(i)``, where ``rel(i)`` is 1 when the ``i``-th ranked item has
  class ``y`` and ``P(i)`` is the precision of the first ``i`` items. Reported as the mean over the queries
  with ``R >= 1``, in percent (as mmpretrain reports its retrieval metrics); NaN when no query has ``R >= 1``.

The evaluator (:class:`RetrievalMetrics`, an :class:`~fewray.core.protocols.Evaluator`) keys each query's
result by its query id, so any split of the queries over Ray tasks gives the same numbers, to the last bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from fewray.core.protocols import KeyedEvaluator

#: mmpretrain's default Recall@K cut-offs in fewray's retrieval runs
DEFAULT_TOPK = (1, 5, 10)

__all__ = ["DEFAULT_TOPK", "RetrievalMetrics", "average_precision_at_r", "query_result", "ranking"]


def ranking(sim_row: Any, exclude: int = -1) -> np.ndarray:
    """Gallery indices of one query by descending similarity (stable: equal similarities in gallery order),
    without ``exclude`` (the query's own gallery index, or -1 for none).

    Example::

        >>> ranking([0.2, 0.9, 0.2, 0.5], exclude=1).tolist()
        [3, 0, 2]
    """
    sim = np.asarray(sim_row, dtype=np.float64).reshape(-1)
    order = np.argsort(-sim, kind="stable")
    return order[order != exclude] if exclude >= 0 else order


def average_precision_at_r(relevant: Sequence[bool] | np.ndarray, r: int) -> float:
    """``AP@R`` of a ranking given as relevance flags (most similar first): ``(1/R) sum_{i<=R} P(i) rel(i)``.

    Args:
        relevant: ``rel(i)`` of (at least) the first ``R`` ranked items.
        r: ``R``, the number of relevant items in the gallery (>= 1).

    Example::

        >>> average_precision_at_r([True, False, True, True], r=3)   # (1/1 + 0 + 2/3) / 3
        0.5555555555555555
    """
    rel = np.asarray(relevant, dtype=bool)[:r]
    hits = np.cumsum(rel)
    precision = hits / np.arange(1, len(rel) + 1)
    return float(np.sum(precision * rel) / r)


def query_result(sim_row: Any, query_label: int, gallery_labels: np.ndarray, topk: Sequence[int] = DEFAULT_TOPK,
                 exclude: int = -1) -> tuple[tuple[int, ...], float | None, int]:
    """One query's ``(hits, ap_r, r)``: ``hits[j]`` 1 if a same-class item is among the first ``topk[j]``,
    ``ap_r`` its AP@R (None when ``r == 0``), ``r`` the number of same-class gallery items (itself excluded).

    Example::

        >>> query_result([0.9, 0.8, 0.7, 0.1], 1, np.array([0, 1, 1, 1]), topk=(1, 2))   # (1/2 + 2/3) / 3
        ((0, 1), 0.38888888888888884, 3)
    """
    gallery_labels = np.asarray(gallery_labels)
    order = ranking(sim_row, exclude)
    rel = gallery_labels[order] == query_label
    hits = tuple(int(rel[:k].any()) for k in topk)
    r = int(rel.sum())
    return hits, (average_precision_at_r(rel, r) if r else None), r


class RetrievalMetrics(KeyedEvaluator):
    """Recall@K and mAP@R of ranked galleries (see the module docstring), as an
    :class:`~fewray.core.protocols.Evaluator`.

    ``process`` takes one shard of queries: ``outputs = {"query_ids": (n,), "similarity": (n, P)}`` (a numpy array
    or CPU tensor) and ``targets = {"query_labels": (n,), "gallery_labels": (P,), "exclude": (n,) or None}``
    (``exclude``: each query's own gallery index in a leave-one-out run, -1 or None for none); it returns
    ``{query_id: (hits, ap_r, r)}`` (a few numbers per query). ``merge`` unions the shards' dicts, ``compute``
    averages over the queries in id order.

    Args:
        topk (Sequence[int]): the K of each Recall@K (positive). Default ``(1, 5, 10)``.

    Attributes:
        metrics: ``Recall@K`` for each K, ``mAP@R``, ``num_queries`` (all ``"max"``).

    Raises:
        ValueError: a ``topk`` that is not positive; ``process`` with rows, labels or exclusions of different
            lengths; ``compute`` of no queries.

    Example::

        >>> import numpy as np
        >>> ev = RetrievalMetrics(topk=(1, 2))
        >>> sim = np.array([[1.0, 0.9, 0.1], [0.9, 1.0, 0.8], [0.1, 0.8, 1.0]])
        >>> targets = {"gallery_labels": [0, 0, 1], "query_labels": [0, 0, 1], "exclude": [0, 1, 2]}
        >>> shards = [ev.process({"query_ids": [i], "similarity": sim[i:i + 1]},
        ...                      {**targets, "query_labels": [targets["query_labels"][i]], "exclude": [i]})
        ...           for i in range(3)]
        >>> ev.compute(ev.merge(shards))
        {'Recall@1': 66.66..., 'Recall@2': 66.66..., 'mAP@R': 100.0, 'num_queries': 3}
    """

    metrics = ("Recall@1", "Recall@5", "Recall@10", "mAP@R", "num_queries")
    modes = {}

    def __init__(self, topk: Sequence[int] = DEFAULT_TOPK) -> None:
        topk = (topk,) if isinstance(topk, int) else tuple(topk)
        if not topk or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in topk):
            raise ValueError(f"Recall@K needs positive integers K, got {topk}")
        self.topk = tuple(int(k) for k in topk)
        self.metrics = (*(f"Recall@{k}" for k in self.topk), "mAP@R", "num_queries")

    def process(self, outputs: dict[str, Any], targets: dict[str, Any] | None = None) -> dict[int, tuple]:
        """A shard's ``{query_id: (hits, ap_r, r)}`` (see the class docstring)."""
        if targets is None:
            raise ValueError("RetrievalMetrics.process needs targets (query and gallery labels)")
        ids = [int(i) for i in np.asarray(outputs["query_ids"]).reshape(-1)]
        sim = np.asarray(outputs["similarity"])
        sim = sim.reshape(len(ids), -1) if sim.size or not ids else sim
        q_labels = np.asarray(targets["query_labels"]).reshape(-1)
        g_labels = np.asarray(targets["gallery_labels"]).reshape(-1)
        exclude = targets.get("exclude")
        exclude = np.full(len(ids), -1) if exclude is None else np.asarray(exclude).reshape(-1)
        if not (len(sim) == len(q_labels) == len(exclude) == len(ids)) or (ids and sim.shape[1] != len(g_labels)):
            raise ValueError(f"RetrievalMetrics.process: {len(ids)} query ids, similarity {sim.shape}, "
                             f"{len(q_labels)} query labels, {len(exclude)} exclusions, {len(g_labels)} gallery labels")
        return {qid: query_result(row, int(y), g_labels, self.topk, int(ex))
                for qid, row, y, ex in zip(ids, sim, q_labels, exclude)}

    def compute(self, merged: dict[int, tuple]) -> dict[str, float]:
        """``{"Recall@K" for each K, "mAP@R", "num_queries"}``, percentages averaged in query-id order."""
        if not merged:
            raise ValueError("no queries to evaluate")
        ids = sorted(merged)
        hits = np.array([merged[i][0] for i in ids], dtype=np.float64).reshape(len(ids), len(self.topk))
        aps = np.array([merged[i][1] for i in ids if merged[i][1] is not None], dtype=np.float64)
        out: dict[str, float] = {f"Recall@{k}": float(100.0 * hits[:, j].mean()) for j, k in enumerate(self.topk)}
        out["mAP@R"] = float(100.0 * aps.mean()) if len(aps) else math.nan
        out["num_queries"] = len(ids)
        return out
