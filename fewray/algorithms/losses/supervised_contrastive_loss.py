"""SupervisedContrastiveLoss: FSCE's contrastive proposal encoding loss."""

from __future__ import annotations

import torch

from fewray.algorithms.builder import LOSSES
from fewray.core.errors import ConfigError

REWEIGHT_TYPES = ("none", "exp", "linear")


@LOSSES.register
class SupervisedContrastiveLoss(torch.nn.Module):
    """The contrastive proposal encoding (CPE) loss of FSCE (Sun et al., CVPR 2021,
    https://arxiv.org/abs/2103.05950, eq. 3-4; mmfewshot's ``SupervisedContrastiveLoss``): a supervised
    contrastive loss (Khosla et al., NeurIPS 2020) over the RoI embeddings of a batch, where proposals of the same
    class (background is a class) attract and others repel, counted only for proposals that overlap their ground
    truth by at least ``iou_threshold``.

    For unit embeddings ``z`` ``(R, D)``, ``s[i, j] = z_i . z_j / temperature`` and, for a proposal ``i`` with
    ``iou_i >= iou_threshold`` and ``P(i)`` the other proposals of its class::

        L_i = -1/|P(i)| * sum_{j in P(i)} log( exp(s[i, j]) / sum_{k != i} exp(s[i, k]) )

    and the loss is ``loss_weight * mean_i f(iou_i) L_i`` with ``f`` = 1 (``reweight_type='none'``),
    ``exp(iou) - 1`` or ``iou`` (``linear``). A proposal with no other of its class contributes 0.

    Args:
        temperature (float): tau (FSCE: 0.2). iou_threshold (float): the IoU a proposal needs to count (0.8).
        loss_weight (float): multiplier (0.5); :class:`~fewray.algorithms.fewshot_det.hooks.ContrastiveLossDecayHook`
            decays it during training through :attr:`weight_scale`. reweight_type (str): ``none``, ``exp``, ``linear``.

    Shapes:
        ``features (R, D)`` (normalised here), ``labels (R,)`` ints, ``ious (R,)`` -> a scalar.

    Raises:
        ConfigError: a temperature <= 0 or an unknown ``reweight_type``.

    Example::

        >>> loss = SupervisedContrastiveLoss(temperature=0.2, iou_threshold=0.5)
        >>> z = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
        >>> labels, ious = torch.tensor([0, 0, 1, 1]), torch.ones(4)
        >>> good = float(loss(z, labels, ious)); bad = float(loss(z, torch.tensor([0, 1, 0, 1]), ious))
        >>> good < bad
        True
    """

    def __init__(self, temperature: float = 0.2, iou_threshold: float = 0.8, loss_weight: float = 0.5,
                 reweight_type: str = "none") -> None:
        super().__init__()
        if temperature <= 0:
            raise ConfigError(f"SupervisedContrastiveLoss: temperature must be > 0, got {temperature}")
        if reweight_type not in REWEIGHT_TYPES:
            raise ConfigError(f"SupervisedContrastiveLoss: reweight_type must be one of {', '.join(REWEIGHT_TYPES)}, "
                              f"got {reweight_type!r}")
        self.temperature, self.iou_threshold = float(temperature), float(iou_threshold)
        self.loss_weight, self.reweight_type = float(loss_weight), reweight_type
        #: set by ContrastiveLossDecayHook (1.0 = no decay)
        self.weight_scale = 1.0

    def forward(self, features: torch.Tensor, labels: torch.Tensor, ious: torch.Tensor) -> torch.Tensor:
        """The weighted loss (a scalar; 0 with a graph when no proposal reaches the IoU threshold)."""
        z = torch.nn.functional.normalize(features, dim=1)
        sim = z @ z.T / self.temperature
        sim = sim - sim.max(dim=1, keepdim=True).values.detach()
        eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
        same = (labels[:, None] == labels[None, :]) & ~eye
        log_prob = sim - torch.log((sim.exp() * (~eye)).sum(dim=1, keepdim=True))
        per = -(log_prob * same).sum(dim=1) / same.sum(dim=1).clamp(min=1)
        keep = ious >= self.iou_threshold
        if not bool(keep.any()):
            return features.sum() * 0.0
        coef = {"none": torch.ones_like(ious), "exp": ious.exp() - 1, "linear": ious}[self.reweight_type]
        return self.loss_weight * self.weight_scale * (per * coef)[keep].mean()
