"""DropBlock: structured dropout of square regions (Ghiasi, Lin and Le, NeurIPS 2018)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DropBlock(nn.Module):
    """Zero random ``block_size x block_size`` squares of each feature map channel, then rescale.

    From "DropBlock: A regularization method for convolutional networks" (Ghiasi et al., NeurIPS 2018), as
    used by ResNet-12 in MetaOptNet (Lee et al., CVPR 2019) and mmfewshot. Block centres are Bernoulli(gamma)
    samples over the positions where a whole block fits; the kept activations are scaled by
    ``numel / kept`` so the expected sum is unchanged. Identity in eval mode or when ``gamma == 0``.

    Args:
        block_size (int): side of a dropped square; clipped to the feature map size. Default 5.
        drop_rate (float): target fraction of dropped activations, used to derive ``gamma`` when
            :meth:`forward` gets none (Ghiasi et al.'s eq. 1). Default 0.1.

    Shapes:
        ``(N, C, H, W)`` -> ``(N, C, H, W)``.

    Raises:
        ValueError: ``block_size < 1`` or ``drop_rate`` outside ``[0, 1)``.

    Example::

        >>> drop = DropBlock(block_size=3, drop_rate=0.2).train()
        >>> drop(torch.ones(2, 4, 8, 8)).shape
        torch.Size([2, 4, 8, 8])
    """

    def __init__(self, block_size: int = 5, drop_rate: float = 0.1) -> None:
        super().__init__()
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
        self.block_size = block_size
        self.drop_rate = drop_rate

    @staticmethod
    def gamma_for(drop_rate: float, block_size: int, feat_size: int) -> float:
        """Seed probability that drops about ``drop_rate`` of a ``feat_size``-sided map (Ghiasi et al., eq. 1)."""
        bs = min(block_size, feat_size)
        return drop_rate / bs**2 * feat_size**2 / (feat_size - bs + 1) ** 2

    def forward(self, x: torch.Tensor, gamma: float | None = None) -> torch.Tensor:
        """Apply DropBlock to ``x`` ``(N, C, H, W)``; ``gamma`` (seed probability) defaults from ``drop_rate``."""
        if not self.training:
            return x
        n, c, h, w = x.shape
        bs = min(self.block_size, h, w)
        if gamma is None:
            gamma = self.gamma_for(self.drop_rate, bs, min(h, w))
        if gamma <= 0:
            return x
        seeds = torch.bernoulli(torch.full((n, c, h - bs + 1, w - bs + 1), min(gamma, 1.0), device=x.device))
        # a seed at (i, j) drops the block [i, i + bs) x [j, j + bs), entirely inside the map
        dropped = F.max_pool2d(F.pad(seeds, (bs - 1, bs - 1, bs - 1, bs - 1)), bs, stride=1)
        keep = (1.0 - dropped).to(x.dtype)
        return x * keep * (keep.numel() / keep.sum().clamp_min(1.0))
