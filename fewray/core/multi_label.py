"""mmpretrain's multi-label decision rule, shared by the head (torch) and the metrics (numpy): plain Python."""

from __future__ import annotations

import warnings


def resolve_thr_topk(thr: float | None, topk: int | None, where: str) -> tuple[float | None, int | None]:
    """mmpretrain's rule for which predictions count as positive: ``(thr, topk)`` with exactly one deciding.

    - ``thr`` set (with or without ``topk``): a class is positive when its score is ``>= thr``; when both are
      set a :class:`UserWarning` says that ``thr`` decides (``topk`` is kept but unused).
    - only ``topk`` set: the ``topk`` best-scoring classes of each sample are positive.
    - neither set: ``thr = 0.5`` (no warning: it is the documented default).

    Args:
        thr (float | None): score threshold in ``[0, 1]``.
        topk (int | None): number of positives per sample, ``>= 1``.
        where (str): who asks, for messages (``"MultiLabelClsHead"``).

    Returns:
        ``(thr, topk)``: ``thr`` is None only when ``topk`` decides.

    Raises:
        ValueError: ``thr`` outside ``[0, 1]`` or ``topk < 1``.
    """
    if thr is not None and not 0.0 <= float(thr) <= 1.0:
        raise ValueError(f"{where}: thr must lie in [0, 1] (it is compared with sigmoid scores), got {thr}")
    if topk is not None and int(topk) < 1:
        raise ValueError(f"{where}: topk must be >= 1, got {topk}")
    if thr is None and topk is None:
        return 0.5, None
    if thr is not None and topk is not None:
        warnings.warn(f"{where}: both thr={thr} and topk={topk} are given; thr decides (mmpretrain's rule)",
                      UserWarning, stacklevel=3)
    return (float(thr) if thr is not None else None), (int(topk) if topk is not None else None)
