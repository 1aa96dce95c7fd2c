"""NTXentLoss: the normalized temperature-scaled cross-entropy of SimCLR (Chen et al., ICML 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fewray.algorithms.builder import LOSSES
from fewray.algorithms.losses.utils import WeightedLoss, check_reduction
from fewray.core.errors import ConfigError


@LOSSES.register
class NTXentLoss(WeightedLoss):
    """NT-Xent, the contrastive loss of SimCLR: each view must pick its partner view among the ``2B - 1`` others.

    From "A Simple Framework for Contrastive Learning of Visual Representations" (Chen, Kornblith, Norouzi and
    Hinton, ICML 2020, https://arxiv.org/abs/2002.05709), eq. (1). mmpretrain computes the same loss in
    ``SimCLR.loss`` + ``ContrastiveHead`` (positives and negatives split, then a cross-entropy); here it is one
    module, so a SimCLR config names it as the model's ``head``.

    For the two views ``z1``, ``z2`` ``(B, D)`` of ``B`` images, the ``2B`` embeddings
    ``z = cat([z1, z2])`` are L2-normalised and ``s[i, j] = z_i . z_j / temperature`` (cosine similarity over
    the temperature). Row ``i``'s positive is its other view, ``(i + B) mod 2B``; the other ``2B - 2``
    embeddings are its negatives, and ``i`` itself is left out::

        loss_i = -log( exp(s[i, pos(i)]) / sum_{k != i} exp(s[i, k]) )

    and the loss is the mean over the ``2B`` rows (``reduction='mean'``), times ``loss_weight``.

    Args:
        temperature (float): tau > 0; SimCLR uses 0.1 to 0.5 (mmpretrain's default 0.1). Default 0.1.
        reduction (str): ``'none'`` (the ``(2B,)`` per-row losses), ``'mean'`` or ``'sum'``. Default ``'mean'``.
        loss_weight (float): the loss is multiplied by this. Default 1.0.

    ``forward(z1, z2, weight=None, avg_factor=None, reduction_override=None)``: ``z1``, ``z2`` ``(B, D)``
    embeddings of the first and second views (any scale: they are normalised here), ``B >= 2``; ``weight`` a
    ``(2B,)`` per-row weight; the rest as :func:`~fewray.algorithms.losses.utils.weight_reduce_loss`.
    :meth:`logits` gives the ``(2B, 2B)`` scores and the index of each row's positive.

    Raises:
        ConfigError: ``temperature <= 0`` or an unknown reduction.
        ValueError: ``z1`` and ``z2`` not both ``(B, D)`` of one shape, or ``B < 2`` (no negatives).

    Example::

        >>> import math, torch
        >>> z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])   # two images, each seen twice identically
        >>> loss = NTXentLoss(temperature=1.0)(z1, z1.clone())
        >>> round(float(loss), 4), round(-math.log(math.e / (math.e + 2)), 4)   # positive 1, negatives 0 and 0
        (0.5514, 0.5514)
    """

    def __init__(self, temperature: float = 0.1, reduction: str = "mean", loss_weight: float = 1.0) -> None:
        if not temperature > 0:
            raise ConfigError(f"NTXentLoss: temperature must be > 0, got {temperature}")
        try:
            check_reduction(reduction)
        except ValueError as exc:
            raise ConfigError(f"NTXentLoss: {exc}") from None
        super().__init__(reduction, loss_weight)
        self.temperature = float(temperature)

    def logits(self, z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The scores ``(2B, 2B)`` (cosine / temperature, the diagonal ``-inf``) and each row's positive ``(2B,)``.

        Raises:
            ValueError: ``z1`` and ``z2`` not both ``(B, D)`` of one shape, or ``B < 2``.
        """
        if z1.dim() != 2 or z1.shape != z2.shape:
            raise ValueError(f"NT-Xent needs the two views' embeddings as (B, D) tensors of one shape, got "
                             f"{tuple(z1.shape)} and {tuple(z2.shape)}")
        b = z1.shape[0]
        if b < 2:
            raise ValueError(f"NT-Xent needs at least 2 images per view (the other images are the negatives), got {b}")
        z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
        s = (z @ z.t()) / self.temperature
        s = s.masked_fill(torch.eye(2 * b, dtype=torch.bool, device=s.device), float("-inf"))
        target = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(s.device)
        return s, target

    def elementwise(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-row cross-entropy of :meth:`logits`' scores against the positives' indices."""
        return F.cross_entropy(pred, target, reduction="none")

    def forward(
        self,
        z1: torch.Tensor,
        z2: torch.Tensor,
        weight: torch.Tensor | None = None,
        avg_factor: float | None = None,
        reduction_override: str | None = None,
    ) -> torch.Tensor:
        """The NT-Xent loss of views ``z1``, ``z2`` ``(B, D)`` (see the class docstring): the weighted, reduced
        cross-entropy of :meth:`logits` (:class:`~fewray.algorithms.losses.utils.WeightedLoss`)."""
        s, target = self.logits(z1, z2)
        return super().forward(s, target, weight, avg_factor, reduction_override)
