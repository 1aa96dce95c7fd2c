"""Small helpers shared by the heads: loss building, accuracy, cosine similarity."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import fewray.algorithms.losses  # noqa: F401  (registers the losses)
from fewray.algorithms.builder import LOSSES


def build_loss(cfg: dict[str, Any] | None, default: str, where: str = "model.head.loss") -> nn.Module:
    """A loss from ``{type: ..., **kwargs}`` (``None``: ``{type: default}``), validated by :data:`LOSSES`."""
    return LOSSES.build(dict(cfg) if cfg is not None else {"type": default}, where)


def accuracy(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Top-1 accuracy in ``[0, 1]`` of scores ``(..., N)`` against labels ``(...)``, detached."""
    return (scores.argmax(-1) == labels).float().mean().detach()


def cosine_scores(query: torch.Tensor, keys: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine similarity of ``query`` ``(..., Q, D)`` to ``keys`` ``(..., M, D)``: ``(..., Q, M)``."""
    return F.normalize(query, dim=-1, eps=eps) @ F.normalize(keys, dim=-1, eps=eps).transpose(-1, -2)
