"""LinearHead: the fully connected classifier of Baseline (Chen et al., ICLR 2019)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fewray.algorithms.builder import HEADS
from fewray.algorithms.heads.base_finetune_head import BaseFinetuneHead


@HEADS.register
class LinearHead(BaseFinetuneHead):
    """A linear layer ``W x + b`` trained with cross-entropy (Baseline; also the output layer of MAML).

    From "A Closer Look at Few-shot Classification" (Chen, Liu, Kira, Wang and Huang, ICLR 2019).

    Args:
        num_classes (int): output classes. Default 5.
        in_channels (int): feature dimension. Default 64.
        loss (dict | None): loss config; default CrossEntropyLoss.

    Shapes:
        ``(B, in_channels)`` -> ``(B, num_classes)``.

    Example::

        >>> LinearHead(num_classes=5, in_channels=64)(torch.randn(3, 64)).shape
        torch.Size([3, 5])
    """

    def __init__(self, num_classes: int = 5, in_channels: int = 64, loss: dict[str, Any] | None = None) -> None:
        super().__init__(num_classes, in_channels, loss)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, feats: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(B, num_classes)`` of features ``(B, D)`` (``labels`` are not used)."""
        return self.fc(feats.flatten(1))
