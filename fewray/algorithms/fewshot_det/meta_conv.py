"""The 4-channel stem of Meta R-CNN's support images: a backbone's first convolution, extended by a mask channel.

mmfewshot's ``ResNetWithMetaConv`` gives a ResNet a second first convolution (``meta_conv``, 4 input channels) for
support images, RGB plus the box mask of ``GenerateMask`` (Yan et al., "Meta R-CNN", ICCV 2019,
https://arxiv.org/abs/1909.13032). :class:`MetaConv` does the same for any backbone of fewray's: a convolution of
the mask channel with the stem's kernel size, stride and padding, added to the stem's output on the RGB
channels (a convolution over 4 channels is the sum of those over 3 and over 1). The RGB part is the stem itself
(pretrained, standardised input); the mask part starts at zero, so an untrained ``MetaConv`` sees the support
image as the query path would.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Iterator

import torch
from torch import nn


def stem_conv(backbone: nn.Module) -> nn.Conv2d:
    """The first ``nn.Conv2d`` of ``backbone`` taking 3 channels (its stem).

    Raises:
        ValueError: the backbone has no such convolution.

    Example::

        >>> from fewray.algorithms.backbones.efficientnet_lite import EfficientNetLite0
        >>> stem_conv(EfficientNetLite0(pretrained=False)).out_channels
        32
    """
    for m in backbone.modules():
        if isinstance(m, nn.Conv2d) and m.in_channels == 3:
            return m
    raise ValueError(f"{type(backbone).__name__} has no 3-channel convolution to extend by a mask channel")


class MetaConv(nn.Module):
    """The mask channel's share of a 4-channel stem (module docstring), hooked on the stem convolution.

    Args:
        stem (nn.Conv2d): the backbone's first convolution (:func:`stem_conv`); its padding rule is kept (a copy
            of the module with one input channel, zero weights and no bias).

    Use: ``with meta_conv.masking(mask): backbone(rgb)`` adds ``conv(mask)`` to the stem's output for that call;
    outside the context the backbone is unchanged. ``mask``: ``(N, 1, H, W)`` in [0, 1], the RGB input's size.

    Example::

        >>> stem = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        >>> meta = MetaConv(stem)
        >>> rgb, mask = torch.rand(1, 3, 8, 8), torch.ones(1, 1, 8, 8)
        >>> with torch.no_grad():
        ...     _ = meta.conv.weight.fill_(1.0)
        ...     with meta.masking(mask):
        ...         out = stem(rgb)
        >>> bool(torch.allclose(out - stem(rgb), nn.functional.conv2d(mask, meta.conv.weight, stride=2, padding=1)))
        True
    """

    def __init__(self, stem: nn.Conv2d) -> None:
        super().__init__()
        conv = copy.deepcopy(stem)
        for hook in (conv._forward_hooks, conv._forward_pre_hooks):
            hook.clear()
        conv.in_channels = 1
        conv.weight = nn.Parameter(torch.zeros(stem.out_channels, 1, *stem.kernel_size))
        conv.bias = None
        self.conv = conv
        self._mask: torch.Tensor | None = None
        stem.register_forward_hook(self._add_mask)

    def _add_mask(self, module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor | None:
        if self._mask is None:
            return None
        return output + self.conv(self._mask.to(output.dtype))

    @contextlib.contextmanager
    def masking(self, mask: torch.Tensor | None) -> Iterator[None]:
        """Add ``conv(mask)`` to the stem's output inside the context (None: nothing added)."""
        self._mask = mask
        try:
            yield
        finally:
            self._mask = None
