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
from typing import Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fewray.platform.errors import ConfigError
from fewray.platform.registry import format_validation_error


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
    """

    dataset: str = "omniglot"
    root: str = "data/omniglot"
    image_size: int = Field(28, ge=8)
    channels: Literal[1, 3] = 1


class ModelConfig(_Strict):
    """The classifier, built through the registries (``type:`` names).

    Attributes:
        type (str): classifier class, e.g. ``ProtoNet``.
        backbone (dict): ``{type: Conv4, ...}`` keyword arguments of the backbone.
        head (dict): ``{type: PrototypeHead, ...}`` keyword arguments of the head.
    """

    type: str = "ProtoNet"
    backbone: dict[str, Any] = Field(default_factory=lambda: {"type": "Conv4"})
    head: dict[str, Any] = Field(default_factory=lambda: {"type": "PrototypeHead"})


class OptimizerConfig(_Strict):
    """Optimizer of meta-training (``torch.optim.<type>``).

    Attributes:
        type: ``Adam``, ``AdamW`` or ``SGD``.
        lr (float): learning rate (> 0).
        weight_decay (float): L2 penalty.
        momentum (float): SGD momentum (ignored by Adam).
    """

    type: Literal["Adam", "AdamW", "SGD"] = "Adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0)


class LrScheduleConfig(_Strict):
    """Step decay: multiply the learning rate by ``gamma`` every ``step_size`` steps (Snell et al.)."""

    step_size: int = Field(2000, ge=1)
    gamma: float = Field(0.5, gt=0, le=1)


class TrainConfig(EpisodeConfig):
    """Episodic meta-training with Ray Train.

    Attributes:
        ways, shots, queries: the training episode shape (Snell et al. train with 60 ways).
        num_steps (int): optimizer steps (one episode per worker per step).
        val_interval (int): steps between meta-validations (and checkpoints).
        log_interval (int): steps between logged training metrics.
        num_workers (int): Ray Train workers (DDP ranks).
        use_gpu (bool): one GPU per worker and the nccl backend; gloo on CPU otherwise.
        cpus_per_worker (int): CPUs reserved per worker in Ray.
        torch_threads (int | None): torch intra-op threads per worker; default ``cpus_per_worker``.
            On a small machine set it above the reservation so the episode builder keeps a slot.
        keep_checkpoints (int): best checkpoints kept by ``accuracy_mean`` (the latest is always kept).
        max_failures (int): worker failures Ray Train recovers from by restarting from the latest checkpoint.
    """

    ways: int = Field(60, ge=2)
    shots: int = Field(5, ge=1)
    queries: int = Field(5, ge=1)
    num_steps: int = Field(5000, ge=1)
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


class EvalConfig(EpisodeConfig):
    """Meta-validation or meta-test: tasks drawn from one split.

    Attributes:
        split (str): catalog split, ``val`` or ``test``.
        num_tasks (int): episodes to evaluate.
        seed (int): seed of the episodes; task ``i`` is the same for every worker count.
        batch_size (int): images per backbone pass when extracting features.
    """

    split: str = "test"
    num_tasks: int = Field(2000, ge=1)
    seed: int = 0
    batch_size: int = Field(128, ge=1)


class TrackingConfig(_Strict):
    """MLflow settings.

    Attributes:
        experiment (str): MLflow experiment name.
        tracking_uri (str | None): None means ``MLFLOW_TRACKING_URI`` or, if unset,
            ``sqlite:///mlflow.db`` in the current directory.
    """

    experiment: str = "fewray"
    tracking_uri: str | None = None


class ExperimentConfig(_Strict):
    """A whole experiment: data, model, meta-training, meta-validation, meta-test, tracking."""

    name: str = "experiment"
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    val: EvalConfig = Field(default_factory=lambda: EvalConfig(split="val", num_tasks=500))
    test: EvalConfig = Field(default_factory=EvalConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @model_validator(mode="after")
    def _check_model(self) -> "ExperimentConfig":
        # Build-time validation of the registered model arguments (type names and keys).
        from fewray.algorithms import build_classifier

        build_classifier(self.model, validate_only=True)
        return self

    def to_dict(self) -> dict[str, Any]:
        """The config as plain Python types (YAML/JSON-serialisable)."""
        return self.model_dump(mode="json")


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got '{item}'")
    key, value = item.split("=", 1)
    try:
        parsed = yaml.safe_load(value) if value != "" else ""
    except yaml.YAMLError:
        parsed = value
    return key.strip().split("."), parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a raw config dict, in place.

    Raises:
        ConfigError: for an item without ``=`` or a path through a non-mapping value.
    """
    for item in overrides or []:
        path, value = _parse_override(item)
        node = raw
        for i, part in enumerate(path[:-1]):
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {item}: config key '{'.'.join(path[: i + 1])}' is not a section")
            node = nxt
        node[path[-1]] = value
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
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config file {path}{where}: invalid YAML ({problem})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top level")
    return config_from_dict(apply_overrides(raw, overrides))


def config_from_dict(raw: dict[str, Any]) -> ExperimentConfig:
    """Validate a raw config dict (see :func:`load_config`); relative ``data.root`` becomes absolute."""
    try:
        cfg = ExperimentConfig.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None
    cfg.data.root = str(Path(cfg.data.root).expanduser().resolve()) if "://" not in cfg.data.root else cfg.data.root
    return cfg


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
