"""Checkpoints: one ``checkpoint.pt`` holding model, optimizer, scheduler, step, config and metrics.

Loading always uses ``torch.load(..., weights_only=True)``: nothing in a user file is unpickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fewray.algorithms.utils.weights import (CHECKPOINT_FILE, load_state_checked, load_weights, resolve_checkpoint,
                                             state_dict_mismatch, train_result_checkpoint)
from fewray.core.errors import CheckpointError

__all__ = ["CHECKPOINT_FILE", "load_checkpoint", "load_model_state", "load_weights", "resolve_checkpoint",
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
