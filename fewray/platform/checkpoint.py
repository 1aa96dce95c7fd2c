"""Checkpoints: one ``checkpoint.pt`` holding model, optimizer, scheduler, step, config and metrics.

Loading always uses ``torch.load(..., weights_only=True)``: nothing in a user file is unpickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from fewray.algorithms.utils.weights import (CHECKPOINT_FILE, load_state_checked, load_weights, resolve_checkpoint,
                                             state_dict_mismatch, train_result_checkpoint)
from fewray.core.errors import CheckpointError

if TYPE_CHECKING:
    from fewray.platform.config import ExperimentConfig

__all__ = ["CHECKPOINT_FILE", "load_checkpoint", "load_classifier", "load_model_state", "load_weights", "resolve_checkpoint",
           "save_checkpoint", "state_dict_mismatch", "train_result_checkpoint"]


def save_checkpoint(directory: str | Path, **state: Any) -> Path:
    """Write ``state`` (tensors, dicts, lists, numbers, strings) to ``directory/checkpoint.pt``."""
    path = Path(directory) / CHECKPOINT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    """Load a checkpoint file or directory with ``weights_only=True``.

    Raises:
        CheckpointError: missing, truncated or not a fewray checkpoint.
    """
    p = resolve_checkpoint(path)
    state = load_weights(p, map_location)
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{p} is not a fewray checkpoint (no 'model' entry)")
    return state


def load_model_state(model: torch.nn.Module, state: dict[str, Any], path: str | Path = "checkpoint") -> None:
    """Load ``state['model']`` into ``model``.

    Raises:
        CheckpointError: when the weights do not fit the model (another architecture).
    """
    load_state_checked(model, state.get("model"), f"checkpoint {path} does not fit model {type(model).__name__}",
                       f"checkpoint {path} holds no state dict under 'model'")


def config_and_state(config: "str | Path | ExperimentConfig | None", checkpoint: "str | Path | None",
                     overrides: "list[str] | None", who: str) -> tuple["ExperimentConfig", dict | None, Path | None]:
    """``(config, checkpoint state or None, checkpoint path or None)`` of an inference API: the config from a YAML
    path (with ``overrides``), an ``ExperimentConfig``, or None for the one the checkpoint stores.

    Raises:
        ConfigError: no config and no checkpoint that stores one (naming ``who``); CheckpointError: a missing or
            unreadable checkpoint.
    """
    from fewray.platform.config import ExperimentConfig, config_from_dict, load_config
    from fewray.platform.errors import ConfigError

    state = path = None
    if checkpoint is not None:
        path = resolve_checkpoint(Path(checkpoint).expanduser())
        state = load_checkpoint(path)
    if config is None:
        if state is None or not isinstance(state.get("config"), dict):
            raise ConfigError(f"{who} needs a config (or a checkpoint that stores one)")
        return config_from_dict(state["config"]), state, path
    if isinstance(config, ExperimentConfig):
        return config, state, path
    return load_config(config, overrides), state, path


def load_classifier(config: "str | Path | ExperimentConfig | None", checkpoint: "str | Path | None" = None,
                    device: str = "cpu", overrides: "list[str] | None" = None) -> "torch.nn.Module":
    """A classifier built from ``config`` (a YAML path, an ``ExperimentConfig``, or None: the checkpoint's own) with
    the weights of ``checkpoint`` (None: random), in eval mode on ``device``, its config as ``model.cfg``: the
    work of :func:`fewray.apis.init_classifier` (see it for the arguments and errors), also used by retrieval.

    Raises:
        ConfigError: no config and no checkpoint that stores one; CheckpointError: see ``init_classifier``.
    """
    from fewray.algorithms import build_classifier
    from fewray.platform.features import channels_last

    cfg, state, path = config_and_state(config, checkpoint, overrides, "init_classifier")
    if state is not None:
        from fewray.platform.base_classes import resolve_base_classes
        from fewray.platform.preflight import check_checkpoint_model

        check_checkpoint_model(state, cfg.model.model_dump(), str(path))  # a ProtoNet checkpoint is no MatchingNet
        cfg = resolve_base_classes(cfg, state)
    model = build_classifier(cfg.model.model_dump(), for_checkpoint=state is not None)
    if state is not None:
        load_model_state(model, state, path)
    model.cfg = cfg
    channels_last(model.to(device))
    model.eval()
    return model
