"""Feature extractors: ``(N, C, H, W)`` images in, ``(N, D)`` or ``(N, D, h, w)`` features out."""

from fewray.algorithms.backbones.conv4 import Conv4, ConvNet

__all__ = ["Conv4", "ConvNet"]
