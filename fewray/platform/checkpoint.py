"""Checkpoints: one ``checkpoint.pt`` holding model, optimizer, scheduler, step, config and metrics.

Loading always uses ``torch.load(..., weights_only=True)``: nothing in a user file is unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from fewray.platform.errors import CheckpointError

CHECKPOINT_FILE = "checkpoint.pt"


def save_checkpoint(directory: str | Path, **state: Any) -> Path:
    """Write ``state`` (tensors, dicts, lists, numbers, strings) to ``directory/checkpoint.pt``."""
    path = Path(directory) / CHECKPOINT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    return path


def train_result_checkpoint(path: str | Path) -> Path:
    """The best checkpoint named by a ``train_result.json`` (written by ``pipelines/metatrain.py``).

    Raises:
        CheckpointError: the file is not valid JSON or has no ``best_checkpoint``.
    """
    p = Path(path)
    try:
        return Path(json.loads(p.read_text())["best_checkpoint"])
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"{p} is not a train_result.json (no 'best_checkpoint')") from None


def resolve_checkpoint(path: str | Path) -> Path:
    """The ``checkpoint.pt`` file behind ``path`` (the file itself, a checkpoint directory or a ``train_result.json``).

    Raises:
        CheckpointError: if nothing exists at ``path``, the directory holds no checkpoint or the JSON names none.
    """
    p = Path(path)
    if p.suffix == ".json" and p.is_file():
        p = train_result_checkpoint(p)
    if p.is_dir():
        p = p / CHECKPOINT_FILE
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return p


def load_weights(path: str | Path, map_location: str = "cpu") -> Any:
    """``torch.load(..., weights_only=True)`` of the file behind ``path`` (see :func:`resolve_checkpoint`),
    whatever it holds (a fewray checkpoint or a bare state dict).

    Raises:
        CheckpointError: missing, truncated, or a pickle that is not plain tensors and containers.
    """
    p = resolve_checkpoint(path)
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError, ...
        raise CheckpointError(f"cannot read checkpoint {p}: {' '.join(str(exc).split())[:200]}") from None


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
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "mismatch"
        raise CheckpointError(f"checkpoint {path} does not fit model {type(model).__name__}: {first}") from None
