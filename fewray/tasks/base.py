"""The :class:`TrainingTask` protocol and its registry.

Example::

    >>> from fewray.tasks import TASKS
    >>> TASKS.get("episodes").rate_name
    'episodes_per_second'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from fewray.core.registry import Registry

if TYPE_CHECKING:
    import ray.data
    import torch

    from fewray.platform.config import ExperimentConfig

#: task name -> :class:`TrainingTask` subclass
TASKS = Registry("training task")


class TrainingTask:
    """How one kind of training gets its data, calls its model and validates it.

    Attributes:
        rate_name (str): the throughput metric logged to MLflow (``episodes_per_second``, ``batches_per_second``).
        val_name (str): what validation is called in messages (``meta-validation``, ``validation``).
        val_metrics (tuple[str, ...]): the metrics :meth:`validator` reports; ``val.metric`` must be one.
        summary_metrics (tuple[str, ...]): the validation metrics of the best checkpoint that ``train_result.json``
            and MLflow hold as ``best_val_<name>``.
    """

    rate_name = "steps_per_second"
    val_name = "meta-validation"
    val_metrics: tuple[str, ...] = ("accuracy_mean", "accuracy_std", "ci95")
    summary_metrics: tuple[str, ...] = ("accuracy_mean", "ci95")

    def dataset(self, cfg: "ExperimentConfig", start: int, stop: int) -> "ray.data.Dataset":
        """A Ray Dataset of the training steps ``start..stop-1`` (one row per step), rebuilt from ``(seed, id)``
        so that any worker count and any resume point see the same batches."""
        raise NotImplementedError

    def items_per_step(self, cfg: "ExperimentConfig") -> int:
        """What one optimizer step of all workers consumes, in the unit of :attr:`rate_name` (default: one row per
        worker, ``train.num_workers``)."""
        return cfg.train.num_workers

    def resolve_config(self, cfg: "ExperimentConfig") -> "ExperimentConfig":
        """``cfg`` with what the task derives from the data filled in before training (the detection task:
        ``model.class_names`` from ``data.classes``); default: ``cfg`` as it is."""
        return cfg

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

    def check_val_data(self, cfg: "ExperimentConfig") -> None:
        """Fail before any work when the ``val.split`` cannot serve validation; default: ``val.ways``-way
        ``val.shots + val.queries``-image episodes (few-shot meta-validation).

        Raises:
            DataError: a missing split, too few classes, or a class with too few images (naming it).
        """
        from fewray.data.catalog import read_labels
        from fewray.data.episodes import EpisodicSampler

        v = cfg.val
        EpisodicSampler(read_labels(cfg.data.root, v.split), v.ways, v.shots, v.queries, v.seed, v.split)

    def validator(self, cfg: "ExperimentConfig") -> Callable[["torch.nn.Module", Any], dict[str, float]]:
        """What rank 0 runs every ``train.val_interval`` steps: ``validator(model, device) -> {metric: value}``
        (every name of :attr:`val_metrics`), called with :meth:`eval_model` of the model under training, which it
        leaves in train mode. Built once per training run (it may load the validation split).

        Default: few-shot meta-validation, :class:`fewray.platform.validation.MetaValidator` (episodes of
        ``val.split`` on one feature pass; ``accuracy_mean``, ``accuracy_std``, ``ci95``).
        """
        from fewray.platform.validation import MetaValidator

        return MetaValidator(cfg)

    def training_artifacts(self, cfg: "ExperimentConfig", best_model: Callable[[], "torch.nn.Module"],
                           out_dir: Any) -> list[Any]:
        """Files to log with a finished training run, written in ``out_dir`` (e.g. the detection task's drawn
        detections on a few validation images); ``best_model()`` loads the best checkpoint's model. Default none."""
        return []

    def val_line(self, val: dict[str, float]) -> str:
        """The validation result in the training progress line (after ``step S/N: training loss L, ``).

        Example::

            >>> TrainingTask().val_line({"accuracy_mean": 71.234, "accuracy_std": 9.1, "ci95": 0.8})
            'meta-validation accuracy 71.23% ± 0.80'
        """
        return f"meta-validation accuracy {val['accuracy_mean']:.2f}% ± {val['ci95']:.2f}"


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
