"""Few-shot accuracy over episodes: the mean with its 95% confidence interval (mmfewshot's meta-test metric).

Each shard (a Ray task) returns ``{task_id: accuracy_percent}`` for the episodes it evaluated; the driver
merges the dicts (a retried shard overwrites its own ids, so every task counts once) and computes, in
task-id order:

- ``accuracy_mean``: the mean accuracy over tasks, in percent;
- ``accuracy_std``: their population standard deviation;
- ``ci95 = 1.96 * accuracy_std / sqrt(num_tasks)``: the 95% confidence half-width (what mmfewshot reports
  as "std").

Any split of the tasks over workers gives the same numbers, to the last bit.
"""

from __future__ import annotations

import math

import numpy as np

from fewray.core.protocols import KeyedEvaluator


def aggregate(task_accuracies: dict[int, float]) -> tuple[float, float, float]:
    """``(mean, std, ci95)`` of per-task accuracies, in task-id order (deterministic).

    Args:
        task_accuracies: ``{task_id: accuracy}`` (percent, or any unit: the results keep it).

    Raises:
        ValueError: no tasks.

    Example::

        >>> mean, std, ci95 = aggregate({0: 100.0, 1: 50.0})
        >>> mean, std, round(ci95, 2)
        (75.0, 25.0, 34.65)
    """
    if not task_accuracies:
        raise ValueError("no task accuracies to aggregate")
    accs = np.array([task_accuracies[k] for k in sorted(task_accuracies)], dtype=np.float64)
    mean, std = float(accs.mean()), float(accs.std())
    return mean, std, 1.96 * std / math.sqrt(len(accs))


class FewShotAccuracy(KeyedEvaluator):
    """Mean accuracy over N-way K-shot episodes with its ci95 (:class:`~fewray.core.protocols.Evaluator`).

    ``process`` takes the per-task accuracies a shard computed (``{task_id: percent}``, from
    :func:`fewray.platform.metatest.evaluate_tasks`), ``merge`` unions the shards' dicts, ``compute`` returns
    ``accuracy_mean``, ``accuracy_std``, ``ci95`` (percent) and ``num_tasks``.

    Example::

        >>> ev = FewShotAccuracy()
        >>> merged = ev.merge([ev.process({0: 100.0}), ev.process({1: 50.0})])
        >>> ev.compute(merged)["accuracy_mean"]
        75.0
    """

    metrics = ("accuracy_mean", "accuracy_std", "ci95", "num_tasks")
    modes = {"accuracy_mean": "max", "accuracy_std": "min", "ci95": "min", "num_tasks": "max"}

    def process(self, outputs: dict[int, float], targets=None) -> dict[int, float]:
        """A shard's ``{task_id: accuracy}`` as plain ints and floats (small and picklable)."""
        return {int(k): float(v) for k, v in outputs.items()}

    def compute(self, merged: dict[int, float]) -> dict[str, float]:
        """``{"accuracy_mean", "accuracy_std", "ci95", "num_tasks"}``.

        Raises:
            ValueError: no tasks.
        """
        mean, std, ci95 = aggregate(merged)
        return {"accuracy_mean": mean, "accuracy_std": std, "ci95": ci95, "num_tasks": len(merged)}
