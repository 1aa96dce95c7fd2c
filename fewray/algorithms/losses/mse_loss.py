"""MSELoss: squared error (mmfewshot's MSELoss, the loss of RelationNet in the paper)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fewray.algorithms.builder import LOSSES
from fewray.algorithms.losses.utils import WeightedLoss


@LOSSES.register
class MSELoss(WeightedLoss):
    """Mean squared error ``(pred - target)^2`` with mmfewshot's weighting arguments.

    Relation Networks (Sung et al., "Learning to Compare: Relation Network for Few-Shot Learning",
    CVPR 2018) regress the relation score of each (query, class) pair to 1 for a match and 0 otherwise.

    Args:
        reduction (str): ``'none'``, ``'mean'`` or ``'sum'``. Default ``'mean'``.
        loss_weight (float): the loss is multiplied by this. Default 1.0.

    ``forward(pred, target, weight=None, avg_factor=None, reduction_override=None)``:
        pred and target of the same shape; weight broadcastable to it (``(N,)`` is per sample);
        avg_factor: with ``'mean'``, divide the sum by this instead of the element count.

    Raises:
        ValueError: unknown reduction, or ``avg_factor`` with ``'sum'``.

    Example::

        >>> MSELoss()(torch.tensor([0.5, 1.0]), torch.tensor([0.0, 1.0]))
        tensor(0.1250)
    """

    def elementwise(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The per-element loss before weighting and reduction."""
        return F.mse_loss(pred, target.to(pred.dtype), reduction="none")
