"""CrossEntropyLoss: softmax cross-entropy over logits (or, with ``use_sigmoid``, binary cross-entropy per class)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fewray.algorithms.builder import LOSSES
from fewray.algorithms.losses.utils import WeightedLoss


@LOSSES.register
class CrossEntropyLoss(WeightedLoss):
    """Cross-entropy of logits ``(N, C)`` against class indices ``(N,)`` (the default loss of most heads).

    With ``use_sigmoid=True`` (mmpretrain's multi-label loss, the default of
    :class:`~fewray.algorithms.cls_heads.MultiLabelClsHead`) it is the binary cross-entropy of each logit
    against a multi-hot target of the same shape, ``-[t log s(x) + (1 - t) log(1 - s(x))]`` with ``s`` the
    sigmoid, element-wise ``(N, C)`` before weighting and reduction (``torch.nn.functional.
    binary_cross_entropy_with_logits``). ``avg_factor=N`` with ``'mean'`` then gives mmpretrain's
    multi-label loss: the sum over classes, averaged over samples.

    Args:
        reduction (str): ``'none'``, ``'mean'`` or ``'sum'``. Default ``'mean'``.
        loss_weight (float): the loss is multiplied by this. Default 1.0.
        use_sigmoid (bool): binary (sigmoid) cross-entropy against a ``(N, C)`` target in ``[0, 1]`` instead of
            softmax cross-entropy against ``(N,)`` class indices. Default False.

    ``forward(pred, target, weight=None, avg_factor=None, reduction_override=None)`` as :class:`NLLLoss`,
    with ``pred`` unnormalised logits; with ``use_sigmoid`` a ``weight`` may also be element-wise ``(N, C)``.

    Raises:
        ValueError: unknown reduction, or ``avg_factor`` with ``'sum'``; with ``use_sigmoid``, a target whose
            shape is not the logits' shape.

    Example::

        >>> CrossEntropyLoss()(torch.zeros(2, 4), torch.tensor([0, 3]))  # log(4)
        tensor(1.3863)
        >>> CrossEntropyLoss(use_sigmoid=True)(torch.zeros(2, 3), torch.tensor([[1, 0, 1], [0, 0, 0]]))  # log(2)
        tensor(0.6931)
    """

    def __init__(self, reduction: str = "mean", loss_weight: float = 1.0, use_sigmoid: bool = False) -> None:
        super().__init__(reduction, loss_weight)
        self.use_sigmoid = use_sigmoid

    def elementwise(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The per-element loss before weighting and reduction."""
        if self.use_sigmoid:
            if target.shape != pred.shape:
                raise ValueError(f"a sigmoid cross-entropy needs a target of the logits' shape {tuple(pred.shape)} "
                                 f"(multi-hot), got {tuple(target.shape)}")
            return F.binary_cross_entropy_with_logits(pred, target.to(pred.dtype), reduction="none")
        return F.cross_entropy(pred, target.long(), reduction="none")
