"""CosineDistanceHead: the cosine classifier of Baseline++ (Chen et al., ICLR 2019)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fewray.algorithms.builder import HEADS
from fewray.algorithms.heads.base_finetune_head import BaseFinetuneHead


@HEADS.register
class CosineDistanceHead(BaseFinetuneHead):
    """Logits are ``scale * cos(x, w_c)`` with one weight vector per class (Baseline++).

    From "A Closer Look at Few-shot Classification" (Chen, Liu, Kira, Wang and Huang, ICLR 2019): the
    linear layer is replaced by cosine similarities to class weight vectors, which reduces intra-class
    variation; the scale (temperature) is 2 for up to 200 classes and 10 above, as the paper's code.

    Args:
        num_classes (int): output classes. Default 5.
        in_channels (int): feature dimension. Default 64.
        temperature (float | None): the scale; None: 2 if ``num_classes <= 200`` else 10. Default None.
        learnable_scale (bool): make the scale a learnable parameter. Default False.
        eps (float): added to norms. Default 1e-5.
        loss (dict | None): loss config; default CrossEntropyLoss.

    Shapes:
        ``(B, in_channels)`` -> ``(B, num_classes)``.

    Example::

        >>> CosineDistanceHead(num_classes=5, in_channels=64)(torch.randn(3, 64)).abs().max() <= 2
        tensor(True)
    """

    def __init__(
        self,
        num_classes: int = 5,
        in_channels: int = 64,
        temperature: float | None = None,
        learnable_scale: bool = False,
        eps: float = 1e-5,
        loss: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(num_classes, in_channels, loss)
        self.init_kwargs.update(temperature=temperature, learnable_scale=learnable_scale, eps=eps)
        scale = torch.tensor(float(temperature if temperature is not None else (2.0 if num_classes <= 200 else 10.0)))
        if learnable_scale:
            self.scale = nn.Parameter(scale)
        else:
            self.register_buffer("scale", scale)
        self.eps = eps
        self.fc = nn.Linear(in_channels, num_classes, bias=False)

    def cosine(self, feats: torch.Tensor) -> torch.Tensor:
        """Cosine similarities ``(B, num_classes)`` of features ``(B, D)`` to the class weights."""
        x = feats.flatten(1)
        x = x / (x.norm(dim=1, keepdim=True) + self.eps)
        w = self.fc.weight / (self.fc.weight.norm(dim=1, keepdim=True) + self.eps)
        return F.linear(x, w)

    def forward(self, feats: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``scale * cos`` ``(B, num_classes)`` (``labels`` are not used)."""
        return self.scale * self.cosine(feats)
