"""Experiment configs: YAML files validated into typed pydantic models, with ``--set`` overrides.

A config has the sections ``data``, ``model``, ``train``, ``val``, ``test`` and
``tracking`` (see ``configs/classification/protonet_conv4_omniglot.yaml``).
An unknown key, a wrong type or a value out of range is a
:class:`~fewray.platform.errors.ConfigError` naming the key, e.g.
``unknown config key 'train.lr_typo'``.

Example::

    >>> cfg = load_config("configs/classification/protonet_conv4_omniglot.yaml",
    ...                   overrides=["train.num_steps=100"])
    >>> cfg.train.ways
    60
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fewray.platform.errors import ConfigError
from fewray.core.registry import format_validation_error


#: largest seed accepted (numpy and torch seed from it; ``seed * 1000 + rank`` must stay below 2**64)
MAX_SEED = 2**32 - 1
#: most meta-test / meta-validation tasks in one run (per-task accuracies are held in memory and logged)
MAX_TASKS = 1_000_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EpisodeConfig(_Strict):
    """An N-way K-shot Q-query episode shape.

    Attributes:
        ways (int): N, classes per episode (>= 2).
        shots (int): K, support images per class (>= 1).
        queries (int): Q, query images per class (>= 1).
    """

    ways: int = Field(5, ge=2)
    shots: int = Field(1, ge=1)
    queries: int = Field(15, ge=1)


class DataConfig(_Strict):
    """Where the Parquet catalog lives and how images are shaped.

    Attributes:
        dataset (str): catalog name, e.g. ``omniglot`` (informational; the catalog says what it holds).
        root (str): directory of the Parquet catalog written by ``pipelines/prepare_data.py``.
            Relative paths are resolved against the current directory when the config is loaded.
        image_size (int): side of the square images fed to the model, in pixels.
        channels (int): 1 for grayscale, 3 for RGB.
        augment (str): training-time augmentation (``torchvision.transforms.v2``), applied per image to
            training episodes and batches, never at validation or test: ``none`` (default), ``flip``, or
            ``standard`` (mmfewshot's natural-image pipeline: RandomResizedCrop, horizontal flip,
            ColorJitter 0.4). See :mod:`fewray.data.transforms`.
    """

    dataset: str = "omniglot"
    root: str = "data/omniglot"
    image_size: int = Field(28, ge=8)
    channels: Literal[1, 3] = 1
    augment: Literal["none", "flip", "standard"] = "none"
    # detection only (a detection catalog, pipelines/prepare_data.py detection): see FewShotDetDataConfig
    classes: str | list[str] | None = None
    min_size: int | None = Field(None, ge=8)
    base_classes: str | list[str] = "BASE_CLASSES"
    novel_classes: str | list[str] = "NOVEL_CLASSES"
    few_shot: "FewShotConfig | None" = None
    query_support: "QuerySupportConfig | None" = None
    mpsr: "MPSRDataConfig | None" = None


class MPSRDataConfig(_Strict):
    """MPSR's auxiliary crops (:mod:`fewray.data.detection.mpsr`): every step, one object of each query image
    cropped with context and resized to each side of ``scales``.

    Attributes:
        scales (list[int]): the crops' sides in pixels (mmfewshot's MPSR: 32, 64, 128, 256, 512, 800); one per
            ``model.rpn_select_levels`` entry.
        context_ratio (float): context added to the box's long side (1 / 7).
    """

    scales: list[Annotated[int, Field(ge=8)]] = Field(default_factory=lambda: [32, 64, 128], min_length=1)
    context_ratio: float = Field(1.0 / 7.0, gt=0)


class QuerySupportConfig(_Strict):
    """How the query-support detectors (``MetaRCNN``, ``FSDetView``) pair query images with support instances:
    mmfewshot's ``NWayKShotDataset`` / ``QueryAwareDataset`` options (:mod:`fewray.data.detection.query_support`).

    Attributes:
        type (str): ``NWayKShotDataset`` (one support set per step, shared by its queries) or ``QueryAwareDataset``
            (one per query, its own class first).
        num_support_ways (int | None): classes per support set (None: every class trained; QueryAwareDataset: 2).
        num_support_shots (int): instances per class and set. Default 1.
        one_support_shot_per_image (bool): no two instances of a set from one image. Default False.
        num_used_support_shots (int | None): per class, only the first this many instances are supports, in
            training and in ``model_init`` (None: all).
        repeat_times (int): accepted for mmfewshot's configs; steps are endless here (``train.num_steps``).
        support_pipeline (list[dict]): ``CropResizeInstance`` / ``GenerateMask`` configs in order (None:
            ``[{type: CropResizeInstance, num_context_pixels: 16, target_size: 320}]``, mmfewshot's default).
    """

    type: Literal["NWayKShotDataset", "QueryAwareDataset"] = "NWayKShotDataset"
    num_support_ways: int | None = Field(None, ge=1)
    num_support_shots: int = Field(1, ge=1)
    one_support_shot_per_image: bool = False
    num_used_support_shots: int | None = Field(None, ge=1)
    repeat_times: int = Field(1, ge=1)
    support_pipeline: list[dict[str, Any]] | None = None

    def dataset_options(self) -> dict[str, Any]:
        """The options of :class:`~fewray.data.detection.query_support.QuerySupportBatchBuilder`."""
        opts = {**self.model_dump(exclude_none=True), "support_pipeline": self.pipeline()}
        if self.type == "QueryAwareDataset" and self.num_support_ways is None:
            opts["num_support_ways"] = 2
        return opts

    def pipeline(self) -> list[dict[str, Any]]:
        """The support pipeline's configs (the default filled in)."""
        return self.support_pipeline or [{"type": "CropResizeInstance", "num_context_pixels": 16, "target_size": 320}]


class FewShotConfig(_Strict):
    """A detection training set of K instances per class (TFA's balanced K-shot set), mmfewshot's dataset options.

    The detection fields of ``data:`` are: ``classes`` (the classes trained: a class split of the catalog's
    ``catalog.json``, e.g. ``BASE_CLASSES`` / ``ALL_CLASSES``, or a list of names), ``min_size`` (the short side
    images are resized to; ``image_size`` is the long side's limit), ``base_classes`` / ``novel_classes`` (the
    splits AP is reported for, ``BASE_AP`` / ``NOVEL_AP``) and ``few_shot`` (this section; none: every annotation).

    Attributes:
        num_novel_shots (int | None): K for the novel classes. num_base_shots (int | None): K for the base classes
            (None: all their instances).
        ann_shot_filter (dict[str, int] | None): per-class K, overriding the two above.
        seed (int): which of the seeded K-shot sets (TFA's seeds; 1 < 2 < 3 < 5 < 10 shots nested per seed).
        shot_files (str | None): a directory of TFA's shot files to read instead of sampling.
        split (str): the catalog split the shots come from. Default ``train``.
    """

    num_novel_shots: int | None = Field(None, ge=1)
    num_base_shots: int | None = Field(None, ge=1)
    ann_shot_filter: dict[str, Annotated[int, Field(ge=1)]] | None = None
    seed: int = Field(0, ge=0, le=2**32 - 1)
    shot_files: str | None = None
    split: str = Field("train", min_length=1)


DataConfig.model_rebuild()


class ModelConfig(_Strict):
    """The classifier, built through the registries (``type:`` names).

    Attributes:
        type (str): classifier class, e.g. ``ProtoNet``.
        backbone (dict): ``{type: Conv4, ...}`` keyword arguments of the backbone.
        head (dict): ``{type: PrototypeHead, ...}`` keyword arguments of the head.
        any other key: a keyword argument of the classifier (e.g. MAML's ``inner_lr``, Baseline's
            ``finetune_steps``), checked against its constructor: an unknown one is an error naming it.
    """

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    type: str = "ProtoNet"
    backbone: dict[str, Any] = Field(default_factory=lambda: {"type": "Conv4", "in_channels": 1})
    head: dict[str, Any] = Field(default_factory=lambda: {"type": "PrototypeHead"})


class OptimizerConfig(_Strict):
    """Optimizer of meta-training (``torch.optim.<type>``).

    Attributes:
        type: ``Adam``, ``AdamW`` or ``SGD``.
        lr (float): learning rate (> 0).
        weight_decay (float): L2 penalty.
        momentum (float): SGD momentum (ignored by Adam).
        lr_mult (dict[str, float]): learning-rate multipliers by parameter name (mmpretrain's
            ``paramwise_cfg.custom_keys[...].lr_mult``): a parameter whose name contains a key gets ``lr * mult``
            (the longest matching key wins), e.g. ``{backbone: 0.1}`` fine-tunes a pretrained backbone ten times
            slower than the head. Default ``{}``: one learning rate.
    """

    type: Literal["Adam", "AdamW", "SGD"] = "Adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0)
    lr_mult: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)


class LrScheduleConfig(_Strict):
    """Step decay: multiply the learning rate by ``gamma`` every ``step_size`` steps (Snell et al.), or at each of
    ``milestones`` when given (mmdet's ``step=[...]``), after an optional linear warm-up.

    Attributes:
        step_size (int): steps between decays (without ``milestones``). gamma (float): the decay factor.
        milestones (list[int] | None): the steps at which to decay instead (detection's schedules).
        warmup_steps (int): linear warm-up from ``warmup_ratio * lr`` to ``lr`` over these first steps (mmdet's
            ``warmup='linear'``; detection). Default 0: none.
        warmup_ratio (float): the warm-up's starting fraction of ``lr``. Default 0.001.
    """

    step_size: int = Field(2000, ge=1)
    gamma: float = Field(0.5, gt=0, le=1)
    milestones: list[Annotated[int, Field(ge=1)]] | None = None
    warmup_steps: int = Field(0, ge=0)
    warmup_ratio: float = Field(0.001, gt=0, le=1)


class TrainConfig(EpisodeConfig):
    """Episodic meta-training with Ray Train.

    Attributes:
        ways, shots, queries: the training episode shape (Snell et al. train with 60 ways); unused by
            models pre-trained on plain batches (Baseline, Baseline++, NegMargin).
        batch_size (int): labelled images per worker per step for models pre-trained on plain batches of
            all base classes (``train_on_batches``: Baseline, Baseline++, NegMargin). Default 128.
        num_steps (int): optimizer steps (meta-updates: ``meta_batch_size`` episodes per step, one per worker by
            default).
        meta_batch_size (int | None): episodes per meta-update (MAML's meta-batch: Finn et al. use 32 on Omniglot
            5-way); their losses are averaged before one optimizer step, and the ``num_workers`` DDP ranks take
            ``meta_batch_size / num_workers`` each (it must divide). None: one episode per worker per step (the
            meta-batch is ``num_workers``). Episodic training only.
        val_interval (int): steps between meta-validations (and checkpoints).
        log_interval (int): steps between logged training metrics.
        num_workers (int): Ray Train workers (DDP ranks).
        use_gpu (bool): one GPU per worker and the nccl backend; gloo on CPU otherwise.
        cpus_per_worker (int): CPUs reserved per worker in Ray.
        torch_threads (int | None): torch intra-op threads per worker; default ``cpus_per_worker``.
            On a small machine set it above the reservation so the episode builder keeps a slot.
        keep_checkpoints (int): best checkpoints kept by ``val.metric`` (the latest is always kept).
        max_failures (int): worker failures Ray Train recovers from by restarting from the latest checkpoint.
        resource_wait_s (float): seconds to wait for the cluster to offer ``num_workers`` x ``cpus_per_worker``
            CPUs (and GPUs with ``use_gpu``) before giving up with an error naming the request and what the
            cluster has. Default 0: fail at once (a fixed cluster or a laptop); set it on an autoscaling
            cluster, where nodes join after the request.
        hooks (list[dict]): training hooks of :data:`fewray.algorithms.builder.HOOKS` called before every step
            with the model (``{type: ContrastiveLossDecayHook, decay_steps: [...], decay_rate: 0.5}``: FSCE).
    """

    ways: int = Field(60, ge=2)
    shots: int = Field(5, ge=1)
    queries: int = Field(5, ge=1)
    batch_size: int = Field(128, ge=1)
    num_steps: int = Field(5000, ge=1)
    meta_batch_size: int | None = Field(None, ge=1)
    val_interval: int = Field(500, ge=1)
    log_interval: int = Field(50, ge=1)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    lr_schedule: LrScheduleConfig = Field(default_factory=LrScheduleConfig)
    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: int = Field(1, ge=1)
    torch_threads: int | None = Field(None, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    max_failures: int = Field(0, ge=-1)
    resource_wait_s: float = Field(0.0, ge=0)
    hooks: list[dict[str, Any]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_meta_batch(self) -> "TrainConfig":
        if self.meta_batch_size is not None and self.meta_batch_size % self.num_workers:
            raise ConfigError(f"train.meta_batch_size ({self.meta_batch_size}) must be a multiple of "
                              f"train.num_workers ({self.num_workers}): each DDP rank takes an equal share")
        return self

    @property
    def tasks_per_worker(self) -> int:
        """Episodes each DDP rank takes per step: ``meta_batch_size / num_workers`` (1 without a meta-batch)."""
        return 1 if self.meta_batch_size is None else self.meta_batch_size // self.num_workers


class EvalConfig(EpisodeConfig):
    """Meta-validation or meta-test: tasks drawn from one split.

    Attributes:
        split (str): catalog split, ``val`` or ``test``.
        num_tasks (int): episodes to evaluate (1 to 1,000,000: the per-task accuracies are kept in memory and
            logged as a CSV, about 40 bytes a task).
        seed (int): seed of the episodes (0 to 2**32 - 1); task ``i`` is the same for every worker count.
        batch_size (int): images per backbone pass when extracting features.
    """

    split: str = Field("test", min_length=1)
    num_tasks: int = Field(2000, ge=1, le=MAX_TASKS)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    batch_size: int = Field(128, ge=1)


def check_validation_metric(metric: str, key: str, reported: tuple[str, ...] | None = None,
                            what: str = "meta-validation") -> None:
    """``metric`` must be one validation reports: ``reported`` (a training task's ``val_metrics``), default few-shot
    accuracy's ``accuracy_mean``, ``accuracy_std``, ``ci95``.

    Raises:
        ConfigError: ``val.metric 'recall' is not a meta-validation metric (one of ...)`` (``what`` names the
            validation: ``validation`` for the multi-label task).
    """
    if reported is None:
        from fewray.evaluation.fewshot_accuracy import FewShotAccuracy

        reported = tuple(m for m in FewShotAccuracy.metrics if m != "num_tasks")
    if metric not in reported:
        raise ConfigError(f"{key} '{metric}' is not a {what} metric (one of {', '.join(reported)})")


def check_backbone_channels(backbone: dict[str, Any], channels: int, where: str, what: str = "the model") -> None:
    """A backbone config's input channels (given, or its class's default ``in_channels``) must be the images'.

    Caught when a config loads, not by a shape error inside a Ray worker a minute later.

    Raises:
        ConfigError: ``data.channels=3 does not fit the model: model.backbone.in_channels is 1; ...``.
    """
    import inspect

    from fewray.algorithms import BACKBONES

    params = inspect.signature(BACKBONES.get(backbone["type"])).parameters
    if "in_channels" not in params:
        return
    given = "in_channels" in backbone
    c_in = backbone["in_channels"] if given else params["in_channels"].default
    if c_in != channels:
        key = f"{where}.in_channels" if given else f"{where} ({backbone['type']}'s default in_channels)"
        raise ConfigError(f"data.channels={channels} does not fit {what}: {key} is {c_in}; "
                          f"set both to the catalog's channels")


class ValConfig(EvalConfig):
    """Meta-validation during training: the tasks of :class:`EvalConfig`, and the metric that picks the best
    checkpoint.

    Attributes:
        metric (str): a metric the model's training task validates (few-shot classification: ``accuracy_mean``,
            ``accuracy_std``, ``ci95``; multi-label: ``mAP``, ``CP``, ``CR``, ``CF1``, ``OP``, ``OR``, ``OF1``;
            checked against the task's ``val_metrics`` when the whole config is validated); the kept checkpoints
            and ``best_checkpoint`` are the best by it. Default ``accuracy_mean``.
        mode: ``max`` (larger is better, default) or ``min``.
    """

    metric: str = "accuracy_mean"
    mode: Literal["max", "min"] = "max"


class TrackingConfig(_Strict):
    """MLflow settings.

    Attributes:
        experiment (str): MLflow experiment name.
        tracking_uri (str | None): None means ``MLFLOW_TRACKING_URI`` or, if unset,
            ``sqlite:///mlflow.db`` in the current directory.
    """

    experiment: str = Field("fewray", min_length=1, pattern=r"\S")
    tracking_uri: str | None = None


# Ray Tune search-space primitives accepted in ``tune.search_space`` and their argument counts.
SEARCH_PRIMITIVES: dict[str, tuple[int, ...]] = {
    "uniform": (2,), "quniform": (3,), "loguniform": (2,), "qloguniform": (3,),
    "randint": (2,), "qrandint": (3,), "lograndint": (2,), "choice": (),
}


class AshaConfig(_Strict):
    """Early stopping of bad trials (Ray Tune's ASHA), counted in meta-validations.

    Attributes:
        type: ``asha`` (stop trials below the top ``1/reduction_factor`` at each rung) or ``fifo`` (no stopping).
        grace_period (int): meta-validations every trial gets before it can be stopped (>= 1).
        reduction_factor (float): keep the top ``1/reduction_factor`` of trials at each rung (> 1).
    """

    type: Literal["asha", "fifo"] = "asha"
    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(2.0, gt=1)


class TrialResources(_Strict):
    """Resources of one trial (its Ray Train run); unset fields keep the ``train:`` values.

    Attributes:
        num_workers (int | None): Ray Train workers per trial; cpus_per_worker (int | None): CPUs each;
        use_gpu (bool | None): one GPU per worker; torch_threads (int | None): torch threads per worker.
    """

    num_workers: int | None = Field(None, ge=1)
    cpus_per_worker: int | None = Field(None, ge=1)
    use_gpu: bool | None = None
    torch_threads: int | None = Field(None, ge=1)


class TuneSection(_Strict):
    """A hyperparameter sweep with Ray Tune (``pipelines/tune.py``).

    Attributes:
        search_space (dict[str, dict]): dotted config key -> one Ray Tune primitive, e.g.
            ``{"train.optimizer.lr": {"loguniform": [1e-4, 1e-2]}, "model.head.temperature": {"choice": [0.5, 1]}}``.
            Primitives: uniform, quniform, loguniform, qloguniform, randint, qrandint, lograndint
            (``[low, high]`` or ``[low, high, q]``) and choice (``[a, b, ...]``). Each key must be a valid config key
            and every bound (every choice) a valid value for it.
        metric: the validation metric Tune optimises and ASHA compares: any the model's training task validates
            (few-shot: ``accuracy_mean``, ``accuracy_std``, ``ci95``; multi-label: ``mAP``, ``CF1``, ...; checked
            when the whole config is validated). Default ``accuracy_mean``.
        mode: ``max`` or ``min``.
        num_samples (int): trials; max_concurrent_trials (int): trials running at once.
        search_alg: ``optuna`` (Tune's OptunaSearch, TPE) or ``random``.
        n_startup_trials (int): random trials before TPE models the results.
        seed (int): seed of the search algorithm.
        scheduler (AshaConfig): early stopping.
        resources_per_trial (TrialResources): Ray Train workers and CPUs/GPUs of one trial.
    """

    search_space: dict[str, dict[str, Any]] = Field(min_length=1)
    metric: str = "accuracy_mean"
    mode: Literal["max", "min"] = "max"
    num_samples: int = Field(8, ge=1)
    max_concurrent_trials: int = Field(1, ge=1)
    search_alg: Literal["optuna", "random"] = "optuna"
    n_startup_trials: int = Field(3, ge=1)
    seed: int = 0
    scheduler: AshaConfig = Field(default_factory=AshaConfig)
    resources_per_trial: TrialResources = Field(default_factory=TrialResources)

    @model_validator(mode="after")
    def _check_primitives(self) -> "TuneSection":
        for key, spec in self.search_space.items():
            where = f"tune.search_space.{key}"
            if not isinstance(spec, dict) or len(spec) != 1:
                raise ConfigError(f"{where}: expected one primitive like {{loguniform: [1.0e-4, 1.0e-2]}}, got {spec!r}")
            (name, args), = spec.items()
            if name not in SEARCH_PRIMITIVES and isinstance(args, dict):
                raise ConfigError(f"{where}: search-space keys are whole dotted config keys like "
                                  f"'{key}.{name}' with one primitive each, not nested sections")
            if name not in SEARCH_PRIMITIVES:
                raise ConfigError(f"{where}: unknown search-space primitive '{name}' "
                                 f"(one of {', '.join(SEARCH_PRIMITIVES)})")
            if not isinstance(args, list) or not args:
                raise ConfigError(f"{where}: {name} expects a non-empty list, got {args!r}")
            counts = SEARCH_PRIMITIVES[name]
            if counts and len(args) not in counts:
                raise ConfigError(f"{where}: {name} expects {counts[0]} values, got {len(args)}")
            if name != "choice":
                if not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
                    raise ConfigError(f"{where}: {name} expects numbers, got {args!r}")
                if args[0] >= args[1]:
                    raise ConfigError(f"{where}: {name} needs low < high, got {args[0]} >= {args[1]}")
                if "log" in name and args[0] <= 0:
                    raise ConfigError(f"{where}: {name} needs low > 0, got {args[0]}")
        return self

    def sample_points(self) -> dict[str, list[Any]]:
        """Values that every key can take (bounds, or every choice), used to validate the keys."""
        return {k: list(args) if name == "choice" else list(args[:2])
                for k, spec in self.search_space.items() for name, args in spec.items()}


class ExperimentConfig(_Strict):
    """A whole experiment: data, model, meta-training, meta-validation, meta-test, tracking."""

    name: str = Field("experiment", min_length=1, pattern=r"\S")
    seed: int = Field(0, ge=0, le=MAX_SEED)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    val: ValConfig = Field(default_factory=lambda: ValConfig(split="val", num_tasks=500))
    test: EvalConfig = Field(default_factory=EvalConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    tune: TuneSection | None = None

    @model_validator(mode="after")
    def _check_model(self) -> "ExperimentConfig":
        # Build-time validation of the registered model arguments (type names and keys).
        from fewray.algorithms import build_classifier

        build_classifier(self.model, validate_only=True)
        return self

    @model_validator(mode="after")
    def _check_val_metric(self) -> "ExperimentConfig":
        # val.metric must be one the model's training task validates (after _check_model: the type is known)
        from fewray.tasks import task_for

        task = task_for(self)
        check_validation_metric(self.val.metric, "val.metric", task.val_metrics, task.val_name)
        if self.train.meta_batch_size is not None and not getattr(task, "meta_batches", False):
            raise ConfigError(f"train.meta_batch_size applies to episodic meta-training; {self.model.type} trains on "
                              f"its task's own batches (train.batch_size)")
        if self.tune is not None:  # a sweep optimises a metric its trials' validation reports
            check_validation_metric(self.tune.metric, "tune.metric", task.val_metrics, task.val_name)
        return self

    @model_validator(mode="after")
    def _check_channels(self) -> "ExperimentConfig":
        check_backbone_channels(self.model.backbone, self.data.channels, "model.backbone")
        return self

    @model_validator(mode="after")
    def _check_search_space(self) -> "ExperimentConfig":
        # Every searched key must be a config key, and every bound/choice a valid value for it.
        if self.tune is None:
            return self
        base = self.model_dump(mode="json", exclude={"tune"})
        for key, values in self.tune.sample_points().items():
            if key.split(".")[0] in ("tune", "name"):
                raise ConfigError(f"tune.search_space.{key}: cannot search over '{key.split('.')[0]}'")
            for value in values:
                trial = set_by_path(base, key, value)
                try:
                    ExperimentConfig.model_validate(trial)
                except pydantic.ValidationError as exc:
                    raise ConfigError(f"tune.search_space.{key} = {value!r}: {format_validation_error(exc)}") from None
                except ConfigError as exc:
                    raise ConfigError(f"tune.search_space.{key} = {value!r}: {exc}") from None
        return self

    def to_dict(self) -> dict[str, Any]:
        """The config as plain Python types (YAML/JSON-serialisable); no ``tune`` key unless a sweep is set."""
        d = self.model_dump(mode="json")
        if d.get("tune") is None:
            d.pop("tune", None)
        return d


#: sections whose keys are themselves dotted config keys (``--set tune.search_space.train.optimizer.lr=...``)
_DOTTED_KEY_SECTIONS = (("tune", "search_space"),)


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got '{item}'")
    key, value = item.split("=", 1)
    try:
        parsed = yaml.safe_load(value) if value != "" else ""
    except yaml.YAMLError:
        parsed = value
    path = key.strip().split(".")
    if any(not part for part in path):
        raise ConfigError(f"--set {item}: '{key.strip()}' is not a config key (an empty part between dots)")
    for section in _DOTTED_KEY_SECTIONS:
        n = len(section)
        if tuple(path[:n]) == section and len(path) > n + 1:
            path = [*section, ".".join(path[n:])]
    return path, parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a raw config dict, in place.

    Raises:
        ConfigError: for an item without ``=`` or a path through a non-mapping value.
    """
    for item in overrides or []:
        path, value = _parse_override(item)
        try:
            _set_in_place(raw, path, value)
        except ConfigError as exc:
            raise ConfigError(f"--set {item}: {exc}") from None
    return raw


def _set_in_place(raw: dict[str, Any], parts: list[str], value: Any) -> None:
    """Set ``raw[parts[0]][parts[1]]...`` to ``value``, creating missing sections.

    Raises:
        ConfigError: a part of the path is not a section (a mapping).
    """
    node = raw
    for i, part in enumerate(parts[:-1]):
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"config key '{'.'.join(parts[: i + 1])}' is not a section")
        node = nxt
    node[parts[-1]] = value


def read_yaml_config(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a YAML config file (any fewray config: experiment, retrieval).

    Raises:
        ConfigError: a directory, a missing or unreadable file, a binary file, a YAML syntax error (with its line),
            or a top level that is not a mapping.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config path {path} is a directory, not a YAML file")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not a text (UTF-8) YAML file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config file {path}{where}: invalid YAML ({problem})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top level")
    return raw


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read, override and validate a YAML experiment config.

    Args:
        path: the YAML file.
        overrides: ``["train.num_steps=100", ...]`` applied before validation.

    Returns:
        ExperimentConfig with ``data.root`` made absolute.

    Raises:
        ConfigError: missing file, YAML syntax error, unknown key, wrong type or value out of range.
    """
    return config_from_dict(apply_overrides(read_yaml_config(path), overrides))


def config_from_dict(raw: dict[str, Any]) -> ExperimentConfig:
    """Validate a raw config dict (see :func:`load_config`); relative ``data.root`` becomes absolute, and so
    do the model's weight-file arguments (e.g. MetaBaseline's ``pretrained_backbone``), which Ray workers
    read from another working directory."""
    try:
        cfg = ExperimentConfig.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None
    cfg.data.root = str(Path(cfg.data.root).expanduser().resolve()) if "://" not in cfg.data.root else cfg.data.root
    from fewray.algorithms.builder import init_file_args

    for key in init_file_args(cfg.model.type):
        value = getattr(cfg.model, key, None)
        if isinstance(value, str) and value and "://" not in value:
            setattr(cfg.model, key, str(Path(value).expanduser().resolve()))
    return cfg


def set_by_path(raw: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``raw`` with the dotted ``key`` (e.g. ``train.optimizer.lr``) set to ``value``.

    Raises:
        ConfigError: when a part of the path is not a section (a mapping).
    """
    import copy

    out = copy.deepcopy(raw)
    try:
        _set_in_place(out, key.split("."), value)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (in '{key}')") from None
    return out


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts into dotted keys: ``{"a": {"b": 1}} -> {"a.b": 1}`` (for MLflow params)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
