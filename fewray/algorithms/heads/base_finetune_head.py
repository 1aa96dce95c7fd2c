"""BaseFinetuneHead: a classification layer trained on base classes, re-made and fine-tuned per task."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fewray.algorithms.heads.utils import accuracy, build_loss


class BaseFinetuneHead(nn.Module):
    """Common part of the fine-tune heads (:class:`LinearHead`, :class:`CosineDistanceHead`, :class:`NegMarginHead`).

    A subclass defines ``forward(feats, labels=None)``: features ``(B, D)`` -> logits ``(B, num_classes)``;
    with ``labels`` ``(B,)`` it returns the logits the training loss uses (e.g. with a margin), without them
    the prediction logits. (One ``forward`` for both, so :func:`torch.func.functional_call` and
    :func:`torch.func.vmap` can fine-tune many tasks' heads at once.) It records its constructor arguments in
    ``self.init_kwargs`` so :meth:`clone` can make a fresh head for a task's ``N`` classes.

    Args:
        num_classes (int): classes of the layer (all base classes in pre-training, ``N`` at meta-test).
        in_channels (int): feature dimension ``D``.
        loss (dict | None): loss config; default CrossEntropyLoss.

    Meta-test protocol (mmfewshot's fine-tune heads): :meth:`before_forward_support` clears,
    :meth:`forward_support` stores features and labels (the classifier then trains a fresh head on them),
    :meth:`forward_query` returns logits ``(Q, num_classes)``.

    Raises:
        ValueError: ``num_classes`` or ``in_channels`` < 1.
    """

    def __init__(self, num_classes: int, in_channels: int, loss: dict[str, Any] | None = None) -> None:
        super().__init__()
        if num_classes < 1 or in_channels < 1:
            raise ValueError(f"num_classes and in_channels must be >= 1, got {num_classes}, {in_channels}")
        self.num_classes, self.in_channels = num_classes, in_channels
        self.loss = build_loss(loss, "CrossEntropyLoss")
        self.init_kwargs: dict[str, Any] = {"num_classes": num_classes, "in_channels": in_channels, "loss": loss}

    def clone(self, num_classes: int, **overrides: Any) -> BaseFinetuneHead:
        """A freshly initialised head of the same type and arguments with ``num_classes`` outputs."""
        return type(self)(**{**self.init_kwargs, **overrides, "num_classes": num_classes})

    def forward_train(self, feats: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss and accuracy of a labelled batch: features ``(B, D)``, labels ``(B,)`` in ``0..num_classes-1``."""
        logits = self(feats.flatten(1), labels)
        return {"loss": self.loss(logits, labels), "accuracy": accuracy(logits, labels)}

    def forward_query(self, feats: torch.Tensor) -> torch.Tensor:
        """Logits ``(Q, num_classes)`` of query features ``(Q, D)``."""
        return self(feats.flatten(1))
