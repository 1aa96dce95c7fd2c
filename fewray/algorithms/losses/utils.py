"""Element-wise loss weighting and reduction shared by the losses (mmfewshot/mmcls ``weight_reduce_loss``)."""

from __future__ import annotations

import torch
from torch import nn

REDUCTIONS = ("none", "mean", "sum")


def check_reduction(reduction: str) -> str:
    """Return ``reduction`` if it is ``'none'``, ``'mean'`` or ``'sum'``.

    Raises:
        ValueError: for any other value.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def weight_reduce_loss(
    loss: torch.Tensor,
    weight: torch.Tensor | None = None,
    reduction: str = "mean",
    avg_factor: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Multiply an element-wise ``loss`` by ``weight`` and reduce it.

    Args:
        loss (Tensor): element-wise loss, any shape.
        weight (Tensor | None): element-wise weight, broadcastable to ``loss`` (a ``(N,)`` per-sample
            weight is broadcast over the trailing dimensions of an ``(N, ...)`` loss). Default None.
        reduction (str): ``'none'``, ``'mean'`` or ``'sum'``. Default ``'mean'``.
        avg_factor (float | None): with ``reduction='mean'`` the loss is ``sum / avg_factor`` instead of a
            plain mean (e.g. the number of valid samples). Default None.

    Returns:
        The reduced loss (a scalar), or the weighted element-wise loss for ``'none'``.

    Raises:
        ValueError: unknown ``reduction``, or ``avg_factor`` with ``reduction='sum'``.
    """
    check_reduction(reduction)
    if weight is not None:
        weight = weight.to(loss.dtype)
        if weight.dim() == 1 and loss.dim() > 1 and weight.shape[0] == loss.shape[0]:
            weight = weight.view(-1, *([1] * (loss.dim() - 1)))
        loss = loss * weight
    if avg_factor is None:
        if reduction == "mean":
            return loss.mean()
        if reduction == "sum":
            return loss.sum()
        return loss
    if reduction == "mean":
        return loss.sum() / avg_factor
    if reduction == "none":
        return loss
    raise ValueError("avg_factor can not be used with reduction='sum'")


class WeightedLoss(nn.Module):
    """Base of the losses: an element-wise :meth:`elementwise` loss, weighted and reduced by mmfewshot's rules.

    Args:
        reduction (str): ``'none'``, ``'mean'`` or ``'sum'``. Default ``'mean'``.
        loss_weight (float): the loss is multiplied by this. Default 1.0.

    Raises:
        ValueError: unknown reduction, or ``avg_factor`` with ``'sum'``.
    """

    def __init__(self, reduction: str = "mean", loss_weight: float = 1.0) -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)
        self.loss_weight = loss_weight

    def elementwise(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The unreduced loss of ``pred`` against ``target`` (subclasses define it)."""
        raise NotImplementedError

    def forward(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor | None = None,
        avg_factor: float | None = None,
        reduction_override: str | None = None,
    ) -> torch.Tensor:
        """``loss_weight * reduce(weight * elementwise(pred, target))``; see :func:`weight_reduce_loss`."""
        reduction = check_reduction(reduction_override or self.reduction)
        return self.loss_weight * weight_reduce_loss(self.elementwise(pred, target), weight, reduction, avg_factor)
