"""Reading weight files without running code: checkpoints, ``train_result.json`` files and bare state dicts.

Every file is loaded with ``torch.load(..., weights_only=True)``: a file that holds Python objects (which
would run code when unpickled) is refused, never loaded. Used by the models that start from a file (a
pre-trained backbone) and by the runtime's checkpoints (:mod:`fewray.platform.checkpoint`).
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from fewray.core.errors import CheckpointError

#: the file a checkpoint directory holds
CHECKPOINT_FILE = "checkpoint.pt"


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


def torch_load_checked(path: Path, what: str, error: type[Exception] = CheckpointError,
                       hint: str = "save the state dict, torch.save(model.state_dict())",
                       map_location: str = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with one-line errors that name ``what`` and the file.

    Args:
        path: an existing file; what: how messages name it (``checkpoint``, ``prototype file``);
        error: the exception class raised; hint: how to write a loadable file, for the Python-objects message;
        map_location: where the tensors go (``torch.load``'s).

    Raises:
        error: ``cannot read <what> PATH: the file is empty (0 bytes)`` / ``...: <torch's reason>`` for a damaged
            or foreign file, or ``<what> PATH holds Python objects (X), not only tensors: loading it could run
            code, so it was not loaded (<hint>)``.
    """
    if path.stat().st_size == 0:
        raise error(f"cannot read {what} {path}: the file is empty (0 bytes)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for such files
        found = re.search(r"GLOBAL ([\w.]+)", str(exc)) if isinstance(exc, pickle.UnpicklingError) else None
        if found:  # weights_only refused a global: the file holds objects, i.e. code
            raise error(f"{what} {path} holds Python objects ({found.group(1)}), not only tensors: loading it could "
                        f"run code, so it was not loaded ({hint})") from None
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise error(f"cannot read {what} {path}: {detail}") from None


def load_weights(path: str | Path, map_location: str = "cpu") -> Any:
    """``torch.load(..., weights_only=True)`` of the file behind ``path`` (see :func:`resolve_checkpoint`),
    whatever it holds (a fewray checkpoint or a bare state dict).

    Raises:
        CheckpointError: missing, empty, truncated, or a pickle that is not plain tensors and containers
            (:func:`torch_load_checked`).
    """
    return torch_load_checked(resolve_checkpoint(path), "checkpoint", map_location=map_location)


def load_state_checked(module: torch.nn.Module, state: Any, mismatch: str, not_a_state: str) -> None:
    """Load ``state`` into ``module`` when it is a state dict whose keys and shapes are the module's exactly.

    Args:
        mismatch: the message's start when keys or shapes differ (``checkpoint PATH does not fit model ProtoNet``);
            :func:`state_dict_mismatch`'s first difference follows it.
        not_a_state: the message when ``state`` is not a dict of string keys (it may use ``{type}``, the type held).

    Raises:
        CheckpointError: ``<not_a_state>`` or ``<mismatch>: 'KEY' has shape (64,) in the checkpoint, (32,) in the
            model`` (or the first missing / unexpected key).
    """
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise CheckpointError(not_a_state.format(type=type(state).__name__))
    if hasattr(module, "adapt_state_dict"):  # e.g. Attention-RPN: kept supports of other classes are dropped
        state = module.adapt_state_dict(state)
    problem = state_dict_mismatch(module.state_dict(), state)
    if problem:
        raise CheckpointError(f"{mismatch}: {problem}")
    module.load_state_dict(state)


def state_dict_mismatch(expected: dict[str, Any], given: dict[str, Any]) -> str | None:
    """The first difference between a model's state dict and a checkpoint's, in words, or None.

    Example::

        >>> state_dict_mismatch({"w": torch.zeros(2, 3)}, {"w": torch.zeros(3, 3)})
        "'w' has shape (3, 3) in the checkpoint, (2, 3) in the model"
    """
    def shape(t: Any) -> str:
        return str(tuple(t.shape)) if hasattr(t, "shape") else type(t).__name__

    for key, value in expected.items():
        if key not in given:
            return f"'{key}' is missing from the checkpoint ({len([k for k in expected if k not in given])} keys missing)"
        if hasattr(value, "shape") and shape(given[key]) != shape(value):
            return f"'{key}' has shape {shape(given[key])} in the checkpoint, {shape(value)} in the model"
    extra = [k for k in given if k not in expected]
    if extra:
        return f"the checkpoint has '{extra[0]}', which the model has not ({len(extra)} unexpected keys)"
    return None
