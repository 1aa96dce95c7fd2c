"""A detection backbone: a fewray backbone's multi-scale maps into a feature pyramid (FPN).

Feature Pyramid Networks (Lin et al., CVPR 2017, https://arxiv.org/abs/1612.03144) as torchvision builds them
(``torchvision.ops.FeaturePyramidNetwork`` with ``LastLevelMaxPool``), on any backbone of :data:`BACKBONES` that
returns named maps for ``out_indices``: EfficientNet-Lite0 (stages 2, 4, 6: 40, 112, 320 channels at strides 8,
16, 32; the CPU default) or a torchvision ResNet-50/101 (``layer1..layer4``, mmfewshot's R-101 FPN).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from fewray.algorithms.builder import BACKBONES
from fewray.core.errors import ConfigError


class FPNBackbone(nn.Module):
    """A backbone's maps -> an FPN with ``out_channels`` per level plus a max-pooled top level.

    Batch norm of the backbone stays in eval mode with its (ImageNet) statistics and affine parameters fixed
    (mmdet's ``norm_eval=True``; detection batches of 2 images are too small to estimate statistics), while its
    convolutions train unless frozen (``frozen_parameters: [backbone]`` on the detector).

    Args:
        backbone (dict): a ``{type: ..., **kwargs}`` of :data:`BACKBONES` with ``out_indices`` (e.g.
            ``{type: EfficientNetLite0, pretrained: true, out_indices: [2, 4, 6]}``).
        out_channels (int): channels of every pyramid level. Default 128 (256 in mmfewshot's R-101 FPN).

    Attributes:
        out_channels (int): as given (torchvision's detectors read it).
        body (nn.Module): the backbone; fpn: the ``FeaturePyramidNetwork``.

    Shapes:
        ``(N, 3, H, W)`` floats in [0, 1] -> ordered dict ``{"0": (N, out_channels, H/s0, W/s0), ..., "pool": ...}``.

    Raises:
        ConfigError: the backbone config has no ``out_indices`` (it would return pooled vectors).

    Example::

        >>> net = FPNBackbone({"type": "EfficientNetLite0", "pretrained": False, "out_indices": [2, 4, 6]}, 32)
        >>> {k: tuple(v.shape) for k, v in net(torch.rand(1, 3, 64, 64)).items()}
        {'0': (1, 32, 8, 8), '1': (1, 32, 4, 4), '2': (1, 32, 2, 2), 'pool': (1, 32, 1, 1)}
    """

    def __init__(self, backbone: dict[str, Any], out_channels: int = 128) -> None:
        super().__init__()
        if not backbone.get("out_indices"):
            raise ConfigError("config key 'model.backbone.out_indices' is missing: a detector needs the maps of "
                              "several stages (e.g. [2, 4, 6] for EfficientNetLite0, [0, 1, 2, 3] for "
                              "TorchvisionResNet)")
        self.body = BACKBONES.build(backbone, "model.backbone")
        in_channels = list(self.body.out_channels)
        self.fpn = FeaturePyramidNetwork(in_channels, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels
        for m in self.body.modules():
            if isinstance(m, nn.BatchNorm2d):
                for p in m.parameters():
                    p.requires_grad_(False)

    def train(self, mode: bool = True) -> "FPNBackbone":
        """As ``nn.Module.train``; the backbone's batch norm stays in eval mode."""
        super().train(mode)
        for m in self.body.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """The pyramid's maps (see the class docstring)."""
        return self.fpn(self.body(x))
