"""ConvNet / Conv4: the four-block CNN of Vinyals et al. (2016) and Snell et al. (2017)."""

from __future__ import annotations

import torch
from torch import nn

from fewray.algorithms.builder import BACKBONES


@BACKBONES.register
class ConvNet(nn.Module):
    """A stack of ``conv3x3 -> BatchNorm -> ReLU -> MaxPool2d(2)`` blocks (mmfewshot's ConvNet).

    From "Matching Networks for One Shot Learning" (Vinyals et al., NeurIPS 2016) and
    "Prototypical Networks for Few-shot Learning" (Snell et al., NeurIPS 2017).

    Args:
        in_channels (int): image channels, 1 for Omniglot, 3 for RGB. Default 3.
        channels (list[int]): output channels of each block. Default ``[64, 64, 64, 64]``.
        kernel_size (int): convolution kernel size. Default 3.
        padding_blocks (list[int]): indices of blocks whose convolution pads by ``kernel_size // 2``;
            default all blocks.
        pooling_blocks (list[int]): indices of blocks ending with a 2x2 max-pool; default all blocks.
        flatten (bool): flatten the output to ``(N, D)``. Default True.

    Shapes:
        input ``(N, in_channels, H, W)`` -> output ``(N, channels[-1] * h * w)`` (flattened)
        or ``(N, channels[-1], h, w)``. For 28x28 Omniglot with four pooling blocks, ``(N, 64)``.

    Example::

        >>> net = ConvNet(in_channels=1)
        >>> net(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 64])
    """

    def __init__(
        self,
        in_channels: int = 3,
        channels: list[int] = (64, 64, 64, 64),
        kernel_size: int = 3,
        padding_blocks: list[int] | None = None,
        pooling_blocks: list[int] | None = None,
        flatten: bool = True,
    ) -> None:
        super().__init__()
        n = len(channels)
        padding_blocks = list(range(n)) if padding_blocks is None else list(padding_blocks)
        pooling_blocks = list(range(n)) if pooling_blocks is None else list(pooling_blocks)
        layers: list[nn.Module] = []
        c_in = in_channels
        for i, c_out in enumerate(channels):
            pad = kernel_size // 2 if i in padding_blocks else 0
            block = [
                nn.Conv2d(c_in, c_out, kernel_size, padding=pad, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
            if i in pooling_blocks:
                block.append(nn.MaxPool2d(2))
            layers.append(nn.Sequential(*block))
            c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.flatten = flatten
        self.out_channels = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features of ``x`` ``(N, C, H, W)``: ``(N, D)`` if ``flatten`` else ``(N, D, h, w)``."""
        x = self.layers(x)
        return x.flatten(1) if self.flatten else x


@BACKBONES.register
class Conv4(ConvNet):
    """ConvNet with four 64-channel blocks (the standard "Conv4" / "Conv-4-64").

    Same arguments as :class:`ConvNet` except that ``channels`` defaults to four blocks of 64.
    """


@BACKBONES.register
class Conv4NoPool(ConvNet):
    """Conv4 that keeps a spatial map, for RelationNet (mmfewshot's Conv4NoPool).

    Four 64-channel blocks; only blocks 0 and 1 max-pool and only blocks 2 and 3 pad, and the output is not
    flattened: 84x84 -> ``(N, 64, 19, 19)``, 28x28 -> ``(N, 64, 5, 5)``.
    Same arguments as :class:`ConvNet` with those defaults.

    Example::

        >>> Conv4NoPool(in_channels=1)(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 64, 5, 5])
    """

    def __init__(
        self,
        in_channels: int = 3,
        channels: list[int] = (64, 64, 64, 64),
        kernel_size: int = 3,
        padding_blocks: list[int] | None = (2, 3),
        pooling_blocks: list[int] | None = (0, 1),
        flatten: bool = False,
    ) -> None:
        super().__init__(in_channels, channels, kernel_size, padding_blocks, pooling_blocks, flatten)
