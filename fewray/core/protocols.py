"""The protocols the runtime knows: an evaluator (``process`` / ``merge`` / ``compute``).

An evaluator turns model outputs into metrics in three steps, so that evaluation can fan out over Ray
tasks and still give the numbers of one pass over the whole set:

1. ``process(outputs, targets)`` runs inside each Ray task on one shard and returns a small, picklable
   partial result (per-task accuracies keyed by task id, per-image scores and labels, detections, ...);
2. ``merge(partials)`` (driver) combines the partials of every shard, in any order, into one;
3. ``compute(merged)`` (driver) returns ``{metric name: float}``.

A metric is never an average of shard metrics: mAP is computed once over the merged predictions, and a
few-shot accuracy's ci95 once over every task. ``metrics`` names what ``compute`` reports and ``modes``
whether larger is better (``max``) or smaller (``min``), which the runtime uses to pick the best checkpoint
and Tune uses as its objective.

This module imports nothing but the standard library (plain Python, no torch).

Example::

    >>> class Mean(Evaluator):
    ...     metrics = ("mean",)
    ...     modes = {"mean": "max"}
    ...     def process(self, outputs, targets=None):
    ...         return [float(x) for x in outputs]
    ...     def merge(self, partials):
    ...         return [x for p in partials for x in p]
    ...     def compute(self, merged):
    ...         return {"mean": sum(merged) / len(merged)}
    >>> ev = Mean()
    >>> ev.compute(ev.merge([ev.process([1, 2]), ev.process([3])]))
    {'mean': 2.0}
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar


class Evaluator(ABC):
    """Base class of evaluators: ``process`` per shard (in a Ray task), ``merge`` and ``compute`` on the driver.

    Attributes:
        metrics (tuple[str, ...]): names of the metrics :meth:`compute` returns.
        modes (dict[str, str]): ``"max"`` or ``"min"`` per metric (default ``"max"``).
    """

    metrics: ClassVar[tuple[str, ...]] = ()
    modes: ClassVar[dict[str, str]] = {}

    @abstractmethod
    def process(self, outputs: Any, targets: Any = None) -> Any:
        """One shard's outputs (and ground truth) -> a small picklable partial result."""

    @abstractmethod
    def merge(self, partials: list[Any]) -> Any:
        """The partial results of every shard (any order) -> one merged result."""

    @abstractmethod
    def compute(self, merged: Any) -> dict[str, float]:
        """The merged result -> ``{metric: value}`` for every name in :attr:`metrics`."""

    def mode(self, metric: str) -> str:
        """``"max"`` or ``"min"``: whether a larger ``metric`` is better.

        Raises:
            KeyError: ``metric`` is not one of :attr:`metrics`.
        """
        if metric not in self.metrics:
            raise KeyError(f"{type(self).__name__} reports {', '.join(self.metrics)}, not '{metric}'")
        return self.modes.get(metric, "max")


class KeyedEvaluator(Evaluator):
    """An :class:`Evaluator` whose partial results are ``{item id: result}`` (a task's accuracy, a query's hits):
    ``merge`` is their union (an id a retried shard sends again keeps the later result), so any split of the items
    over shards gives the same merged dict; ``compute`` reads it in id order.

    Example::

        >>> class Count(KeyedEvaluator):
        ...     metrics = ("n",)
        ...     def process(self, outputs, targets=None):
        ...         return dict(outputs)
        ...     def compute(self, merged):
        ...         return {"n": len(merged)}
        >>> ev = Count()
        >>> ev.compute(ev.merge([{0: 1.0, 1: 0.5}, {1: 0.5, 2: 0.0}]))
        {'n': 3}
    """

    def merge(self, partials: list[dict]) -> dict:
        """The union of the shards' dicts."""
        merged: dict = {}
        for part in partials:
            merged.update(part)
        return merged
