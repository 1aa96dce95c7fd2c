"""ResNet-12: the four-stage residual network of TADAM / MetaOptNet used across few-shot learning."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fewray.algorithms.backbones.dropblock import DropBlock
from fewray.algorithms.builder import BACKBONES


def conv3x3(c_in: int, c_out: int) -> nn.Conv2d:
    """3x3 convolution, stride 1, padding 1, no bias."""
    return nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)


class ResNet12Block(nn.Module):
    """``3 x (conv3x3 -> BN [-> LeakyReLU])`` plus a 1x1-conv shortcut, LeakyReLU, max-pool, dropout/DropBlock.

    Args:
        c_in, c_out (int): channels. pool (int): max-pool stride. drop_rate (float): dropout / DropBlock rate.
        drop_block (bool): use DropBlock (else plain dropout). block_size (int): DropBlock square side.
        warmup (int): batches over which the DropBlock rate ramps linearly from 0 to ``drop_rate``.
    """

    def __init__(
        self, c_in: int, c_out: int, pool: int = 2, drop_rate: float = 0.0, drop_block: bool = False,
        block_size: int = 5, warmup: int = 40000,
    ) -> None:
        super().__init__()
        self.conv1, self.norm1 = conv3x3(c_in, c_out), nn.BatchNorm2d(c_out)
        self.conv2, self.norm2 = conv3x3(c_out, c_out), nn.BatchNorm2d(c_out)
        self.conv3, self.norm3 = conv3x3(c_out, c_out), nn.BatchNorm2d(c_out)
        self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.relu = nn.LeakyReLU(0.1)
        self.pool = nn.MaxPool2d(pool)
        self.drop_rate, self.drop_block, self.warmup = drop_rate, drop_block, warmup
        self.dropblock = DropBlock(block_size, drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.relu(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        out = self.pool(self.relu(out + self.downsample(x)))
        if self.drop_rate > 0 and self.training:
            if self.drop_block:
                # linear warm-up of the drop rate with the number of batches seen (as MetaOptNet / mmfewshot)
                seen = int(self.norm1.num_batches_tracked) if self.norm1.num_batches_tracked is not None else 0
                rate = self.drop_rate * min(1.0, seen / self.warmup) if self.warmup > 0 else self.drop_rate
                feat = min(out.shape[2], out.shape[3])
                out = self.dropblock(out, DropBlock.gamma_for(rate, self.dropblock.block_size, feat))
            else:
                out = F.dropout(out, p=self.drop_rate, training=True)
        return out


@BACKBONES.register
class ResNet12(nn.Module):
    """ResNet-12 (Oreshkin et al. TADAM 2018; Lee et al. "Meta-Learning with Differentiable Convex
    Optimization" (MetaOptNet), CVPR 2019; mmfewshot's ResNet12).

    Four residual stages of 64-160-320-640 channels; each is three 3x3 convs with BatchNorm and
    LeakyReLU(0.1), a 1x1-conv shortcut, a 2x2 max-pool, then dropout (stages 1-2) or DropBlock
    (stages 3-4) when ``drop_rate > 0``. Optional global average pooling and flattening.

    Args:
        in_channels (int): image channels. Default 3.
        channels (list[int]): channels of the four stages. Default ``[64, 160, 320, 640]``.
        drop_rate (float): dropout / DropBlock rate (MetaOptNet uses 0.1). Default 0.0.
        drop_block_size (int): DropBlock square side. Default 5.
        drop_block_warmup (int): batches over which the DropBlock rate ramps up (mmfewshot: 40000). Default 40000.
        with_avgpool (bool): global average pool the last map to ``1x1``. Default True.
        flatten (bool): flatten to ``(N, D)``. Default True.

    Shapes:
        ``(N, in_channels, H, W)`` -> ``(N, 640)`` with avg-pool and flatten (84x84: the last map is 5x5;
        32x32: 2x2); ``(N, 640, H/16, W/16)`` with ``with_avgpool=False, flatten=False``.

    Raises:
        ValueError: ``channels`` does not have 4 entries.

    Example::

        >>> net = ResNet12()
        >>> net(torch.zeros(2, 3, 84, 84)).shape
        torch.Size([2, 640])
    """

    def __init__(
        self,
        in_channels: int = 3,
        channels: list[int] = (64, 160, 320, 640),
        drop_rate: float = 0.0,
        drop_block_size: int = 5,
        drop_block_warmup: int = 40000,
        with_avgpool: bool = True,
        flatten: bool = True,
    ) -> None:
        super().__init__()
        if len(channels) != 4:
            raise ValueError(f"ResNet12 has 4 stages, got channels={list(channels)}")
        stages = []
        c_in = in_channels
        for i, c_out in enumerate(channels):
            stages.append(ResNet12Block(c_in, c_out, 2, drop_rate, i >= 2, drop_block_size, drop_block_warmup))
            c_in = c_out
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.with_avgpool, self.flatten = with_avgpool, flatten
        self.out_channels = c_in
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features of ``x`` ``(N, C, H, W)``."""
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        if self.with_avgpool:
            x = F.adaptive_avg_pool2d(x, 1)
        return x.flatten(1) if self.flatten else x
