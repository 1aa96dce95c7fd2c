"""Wide residual networks (Zagoruyko and Komodakis, BMVC 2016), WRN-28-10 for few-shot learning."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fewray.algorithms.builder import BACKBONES


class WRNBlock(nn.Module):
    """Pre-activation basic block ``BN-ReLU-conv3x3 [-dropout] -BN-ReLU-conv3x3`` plus a shortcut.

    Args:
        c_in, c_out (int): channels. stride (int): stride of the first conv. drop_rate (float): dropout
            between the two convs.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.shortcut = (
            nn.Conv2d(c_in, c_out, 1, stride=stride, bias=True) if stride != 1 or c_in != c_out else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(F.relu(self.norm2(out)))
        return out + self.shortcut(x)


@BACKBONES.register
class WideResNet(nn.Module):
    """Wide ResNet (Zagoruyko and Komodakis, "Wide Residual Networks", BMVC 2016; mmfewshot's WideResNet).

    A 3x3 stem conv with 16 channels, then three groups of ``(depth - 4) / 6`` pre-activation blocks with
    ``16k, 32k, 64k`` channels (``k = widen_factor``; strides ``stride, 2, 2``), a final BN-ReLU,
    global average pooling and flattening.

    Args:
        depth (int): total depth, ``6n + 4``. Default 28.
        widen_factor (int): channel multiplier ``k``. Default 10.
        in_channels (int): image channels. Default 3.
        stride (int): stride of the first group. Default 1.
        drop_rate (float): dropout between the convs of each block. Default 0.0.
        with_avgpool (bool): global average pool to ``1x1``. Default True.
        flatten (bool): flatten to ``(N, D)``. Default True; ``flatten=False`` (with ``with_avgpool=False``)
            returns the ``(N, 64k, H/4, W/4)`` map.

    Shapes:
        ``(N, C, H, W)`` -> ``(N, 64 * widen_factor)``; WRN-28-10: ``(N, 640)``.

    Raises:
        ValueError: ``depth`` is not ``6n + 4``.

    Example::

        >>> net = WideResNet(depth=10, widen_factor=2)
        >>> net(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 128])
    """

    def __init__(
        self,
        depth: int = 28,
        widen_factor: int = 10,
        in_channels: int = 3,
        stride: int = 1,
        drop_rate: float = 0.0,
        with_avgpool: bool = True,
        flatten: bool = True,
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n + 4 with n >= 1, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        groups = []
        for g, s in enumerate((stride, 2, 2)):
            blocks = [WRNBlock(widths[g] if i == 0 else widths[g + 1], widths[g + 1], s if i == 0 else 1, drop_rate)
                      for i in range(n)]
            groups.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = groups
        self.norm = nn.BatchNorm2d(widths[3])
        self.with_avgpool, self.flatten = with_avgpool, flatten
        self.out_channels = widths[3]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features of ``x`` ``(N, C, H, W)``."""
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        x = F.relu(self.norm(x))
        if self.with_avgpool:
            x = F.adaptive_avg_pool2d(x, 1)
        return x.flatten(1) if self.flatten else x


@BACKBONES.register
class WRN28x10(WideResNet):
    """WRN-28-10 (``depth=28, widen_factor=10``; mmfewshot's preset with dropout 0.5): ``(N, 3, H, W) -> (N, 640)``.

    Same arguments as :class:`WideResNet`, with ``drop_rate`` defaulting to 0.5.

    Example::

        >>> WRN28x10()(torch.zeros(1, 3, 32, 32)).shape
        torch.Size([1, 640])
    """

    def __init__(
        self,
        depth: int = 28,
        widen_factor: int = 10,
        in_channels: int = 3,
        stride: int = 1,
        drop_rate: float = 0.5,
        with_avgpool: bool = True,
        flatten: bool = True,
    ) -> None:
        super().__init__(depth, widen_factor, in_channels, stride, drop_rate, with_avgpool, flatten)
