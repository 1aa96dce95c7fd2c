"""The :class:`TrainingTask` protocol and its registry.

Example::

    >>> from fewray.tasks import TASKS
    >>> TASKS.get("episodes").rate_name
    'episodes_per_second'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fewray.core.registry import Registry

if TYPE_CHECKING:
    import ray.data
    import torch

    from fewray.platform.config import ExperimentConfig

#: task name -> :class:`TrainingTask` subclass
TASKS = Registry("training task")


class TrainingTask:
    """How one kind of training gets its data and calls its model.

    Attributes:
        rate_name (str): the throughput metric logged to MLflow (``episodes_per_second``, ``batches_per_second``).
    """

    rate_name = "steps_per_second"

    def dataset(self, cfg: "ExperimentConfig", start: int, stop: int) -> "ray.data.Dataset":
        """A Ray Dataset of the training steps ``start..stop-1`` (one row per step), rebuilt from ``(seed, id)``
        so that any worker count and any resume point see the same batches."""
        raise NotImplementedError

    def check_data(self, cfg: "ExperimentConfig") -> None:
        """Fail before any work when the train split cannot serve this task's batches.

        Raises:
            DataError: naming the split and what is missing.
        """

    def model_inputs(self, batch: dict[str, "torch.Tensor"]) -> dict[str, Any]:
        """Keyword arguments of the model's training call ``model(mode="train", **inputs)`` from one streamed row
        (tensors of a batch of one row: ``batch[key][0]``)."""
        raise NotImplementedError

    def eval_model(self, model: "torch.nn.Module") -> "torch.nn.Module":
        """The model meta-validation evaluates (the model itself for few-shot classifiers)."""
        return model


def task_for_class(cls: type) -> TrainingTask:
    """The training task of a model class: its ``train_task`` attribute, else ``batches`` for a class that trains on
    plain batches (``train_on_batches``), else ``episodes``.

    Raises:
        ConfigError: the class names a task that is not registered.
    """
    name = getattr(cls, "train_task", None) or ("batches" if getattr(cls, "train_on_batches", False) else "episodes")
    return TASKS.get(name)()


def task_for(cfg: "ExperimentConfig") -> TrainingTask:
    """The training task of ``cfg.model`` (:func:`task_for_class` of its class).

    Raises:
        ConfigError: an unknown model type, or a task that is not registered.
    """
    from fewray.algorithms.builder import model_class

    return task_for_class(model_class(cfg.model.type))
