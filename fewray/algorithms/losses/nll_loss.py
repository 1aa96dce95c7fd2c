"""NLLLoss: negative log-likelihood of log-probabilities (mmfewshot's NLLLoss, used by MatchingNet)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fewray.algorithms.builder import LOSSES
from fewray.algorithms.losses.utils import WeightedLoss


@LOSSES.register
class NLLLoss(WeightedLoss):
    """Negative log-likelihood ``-pred[i, target[i]]`` with mmfewshot's weighting arguments.

    Used by Matching Networks (Vinyals et al., "Matching Networks for One Shot Learning", NeurIPS 2016),
    whose head outputs the log of an attention-weighted label distribution.

    Args:
        reduction (str): ``'none'``, ``'mean'`` or ``'sum'``. Default ``'mean'``.
        loss_weight (float): the loss is multiplied by this. Default 1.0.

    ``forward(pred, target, weight=None, avg_factor=None, reduction_override=None)``:
        pred ``(N, C)`` log-probabilities; target ``(N,)`` class indices; weight ``(N,)`` per-sample
        weights; avg_factor: with ``'mean'``, divide the sum by this instead of ``N``;
        reduction_override: a reduction for this call only.

    Raises:
        ValueError: unknown reduction, or ``avg_factor`` with ``'sum'``.

    Example::

        >>> loss = NLLLoss()(torch.log_softmax(torch.randn(4, 3), 1), torch.tensor([0, 1, 2, 0]))
    """

    def elementwise(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The per-element loss before weighting and reduction."""
        return F.nll_loss(pred, target.long(), reduction="none")
