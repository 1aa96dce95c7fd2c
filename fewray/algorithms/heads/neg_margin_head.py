"""NegMarginHead: cosine or softmax classifier with a (negative) margin (Liu et al., ECCV 2020)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fewray.algorithms.builder import HEADS
from fewray.algorithms.heads.base_finetune_head import BaseFinetuneHead


@HEADS.register
class NegMarginHead(BaseFinetuneHead):
    """A classifier whose training logit of the true class is reduced by ``margin`` (negative: increased).

    From "Negative Margin Matters: Understanding Margin in Few-shot Classification" (Liu, Cao, Lin, Li,
    Zhang, Long and Hu, ECCV 2020). ``metric_type='cosine'``: logits ``temperature * (cos(x, w_c) - m [c = y])``;
    ``'softmax'``: ``W x + b - m [c = y]``. The margin only enters the training loss: ``forward(feats, labels)``
    applies it, ``forward(feats)`` (prediction) does not.

    Args:
        num_classes (int): output classes. Default 5.
        in_channels (int): feature dimension. Default 64.
        metric_type (str): ``'cosine'`` or ``'softmax'``. Default ``'cosine'``.
        margin (float): margin ``m`` (the paper's best values are negative, e.g. -0.02). Default 0.0.
        temperature (float): scale of cosine logits (mmfewshot: 30 for training, 5 for the meta-test head).
            Default 30.0.
        loss (dict | None): loss config; default CrossEntropyLoss.

    Raises:
        ValueError: unknown ``metric_type``.

    Example::

        >>> head = NegMarginHead(num_classes=5, in_channels=64, margin=-0.02)
        >>> head.forward_train(torch.randn(4, 64), torch.tensor([0, 1, 2, 3]))["loss"].shape
        torch.Size([])
    """

    def __init__(
        self,
        num_classes: int = 5,
        in_channels: int = 64,
        metric_type: str = "cosine",
        margin: float = 0.0,
        temperature: float = 30.0,
        loss: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(num_classes, in_channels, loss)
        if metric_type not in ("cosine", "softmax"):
            raise ValueError(f"metric_type must be 'cosine' or 'softmax', got {metric_type!r}")
        self.init_kwargs.update(metric_type=metric_type, margin=margin, temperature=temperature)
        self.metric_type, self.margin, self.temperature = metric_type, margin, temperature
        self.fc = nn.Linear(in_channels, num_classes, bias=metric_type == "softmax")

    def _raw(self, feats: torch.Tensor) -> torch.Tensor:
        x = feats.flatten(1)
        if self.metric_type == "cosine":
            return F.linear(F.normalize(x, dim=1), F.normalize(self.fc.weight, dim=1))
        return self.fc(x)

    def forward(self, feats: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(B, num_classes)``; with ``labels`` ``(B,)`` the margin is subtracted at the true class."""
        raw = self._raw(feats)
        if labels is not None:
            classes = torch.arange(raw.shape[-1], device=raw.device)
            raw = raw - self.margin * (classes == labels[..., None]).to(raw.dtype)
        return self.temperature * raw if self.metric_type == "cosine" else raw
