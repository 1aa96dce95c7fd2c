"""CrossEntropyLoss: softmax cross-entropy over logits with mmfewshot's weighting arguments."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fewray.algorithms.builder import LOSSES
from fewray.algorithms.losses.utils import WeightedLoss


@LOSSES.register
class CrossEntropyLoss(WeightedLoss):
    """Cross-entropy of logits ``(N, C)`` against class indices ``(N,)`` (the default loss of most heads).

    Args:
        reduction (str): ``'none'``, ``'mean'`` or ``'sum'``. Default ``'mean'``.
        loss_weight (float): the loss is multiplied by this. Default 1.0.

    ``forward(pred, target, weight=None, avg_factor=None, reduction_override=None)`` as :class:`NLLLoss`,
    with ``pred`` unnormalised logits.

    Raises:
        ValueError: unknown reduction, or ``avg_factor`` with ``'sum'``.

    Example::

        >>> CrossEntropyLoss()(torch.zeros(2, 4), torch.tensor([0, 3]))  # log(4)
        tensor(1.3863)
    """

    def elementwise(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The per-element loss before weighting and reduction."""
        return F.cross_entropy(pred, target.long(), reduction="none")
