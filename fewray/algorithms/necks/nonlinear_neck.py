"""NonLinearNeck: the projection MLP of SimCLR, BYOL and SimSiam (mmpretrain's NonLinearNeck)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from fewray.algorithms.builder import NECKS
from fewray.core.errors import ConfigError


@NECKS.register
class NonLinearNeck(nn.Module):
    """``fc - bn - [relu - fc - bn] x (num_layers - 1)``: the projection head g(.) of SimCLR.

    From "A Simple Framework for Contrastive Learning of Visual Representations" (Chen et al., ICML 2020,
    https://arxiv.org/abs/2002.05709), section 2.1: the contrastive loss is computed on ``z = g(h)``, an MLP
    of the backbone's features ``h``, and ``h`` is the representation kept after training. Same structure and
    arguments as mmpretrain's ``NonLinearNeck``, with ``torch.nn.BatchNorm1d`` (mmpretrain's default is
    SyncBN; see :class:`~fewray.algorithms.selfsup.SimCLR` for data-parallel training).

    Args:
        in_channels (int): features of the backbone's output (after pooling, see ``with_avg_pool``).
        hid_channels (int): width of the hidden layers.
        out_channels (int): width of the projection ``z``.
        num_layers (int): number of fc layers, >= 1 (SimCLR: 2). Default 2.
        with_bias (bool): a bias in the fc layers before the last. Default False.
        with_last_bn (bool): a BatchNorm after the last fc. Default True.
        with_last_bn_affine (bool): that last BatchNorm has a learnable scale and shift (False for SimSiam).
            Default True.
        with_last_bias (bool): a bias in the last fc. Default False.
        with_avg_pool (bool): average a ``(N, C, h, w)`` feature map over space first; a ``(N, D)`` feature
            vector (fewray's flattening backbones) is used as it is either way. Default True.

    Shapes:
        input ``(N, C, h, w)`` or ``(N, D)`` (or a tuple/list of such, of which the last is used, as
        mmpretrain's backbones return), flattened to ``(N, in_channels)`` -> output ``(N, out_channels)``.
        In training mode ``N >= 2`` (BatchNorm).

    Raises:
        ConfigError: a width or ``num_layers`` below 1.
        ValueError: (forward) the flattened input has other than ``in_channels`` features.

    Example::

        >>> import torch
        >>> neck = NonLinearNeck(in_channels=64, hid_channels=128, out_channels=32)
        >>> neck(torch.randn(4, 64, 5, 5)).shape   # averaged over the 5x5 map
        torch.Size([4, 32])
        >>> neck(torch.randn(4, 64)).shape         # Conv4's flattened 28x28 features
        torch.Size([4, 32])
    """

    def __init__(
        self,
        in_channels: int,
        hid_channels: int,
        out_channels: int,
        num_layers: int = 2,
        with_bias: bool = False,
        with_last_bn: bool = True,
        with_last_bn_affine: bool = True,
        with_last_bias: bool = False,
        with_avg_pool: bool = True,
    ) -> None:
        super().__init__()
        for key, value in (("in_channels", in_channels), ("hid_channels", hid_channels),
                           ("out_channels", out_channels), ("num_layers", num_layers)):
            if value < 1:
                raise ConfigError(f"NonLinearNeck: {key} must be >= 1, got {value}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.with_avg_pool = with_avg_pool
        self.relu = nn.ReLU(inplace=True)
        widths = [in_channels] + [hid_channels] * (num_layers - 1) + [out_channels]
        # mmpretrain's names: fc0/bn0 is the first layer; the last may lack its bn
        self.fc_names: list[str] = []
        self.bn_names: list[str | None] = []
        for i in range(num_layers):
            last = i == num_layers - 1
            self.add_module(f"fc{i}", nn.Linear(widths[i], widths[i + 1], bias=with_last_bias if last else with_bias))
            self.fc_names.append(f"fc{i}")
            if not last or with_last_bn:
                self.add_module(f"bn{i}", nn.BatchNorm1d(widths[i + 1], affine=with_last_bn_affine if last else True))
                self.bn_names.append(f"bn{i}")
            else:
                self.bn_names.append(None)

    def forward(self, x: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """The projection ``(N, out_channels)`` of backbone features ``x`` (see the class docstring)."""
        if isinstance(x, (tuple, list)):
            x = x[-1]
        if self.with_avg_pool and x.dim() == 4:
            x = x.mean(dim=(2, 3))
        x = x.flatten(1)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"NonLinearNeck expects {self.in_channels} input features (in_channels), got "
                             f"{x.shape[1]}: set the neck's in_channels to the backbone's output size")
        for i, (fc, bn) in enumerate(zip(self.fc_names, self.bn_names)):
            if i > 0:
                x = self.relu(x)
            x = getattr(self, fc)(x)
            if bn is not None:
                x = getattr(self, bn)(x)
        return x
