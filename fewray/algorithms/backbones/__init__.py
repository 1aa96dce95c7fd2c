"""Feature extractors: ``(N, C, H, W)`` images in, ``(N, D)`` or ``(N, D, h, w)`` features out."""

from fewray.algorithms.backbones.conv4 import Conv4, Conv4NoPool, ConvNet
from fewray.algorithms.backbones.dropblock import DropBlock
from fewray.algorithms.backbones.efficientnet_lite import EfficientNetLite0
from fewray.algorithms.backbones.resnet12 import ResNet12
from fewray.algorithms.backbones.torchvision_backbones import TorchvisionResNet
from fewray.algorithms.backbones.wrn import WideResNet, WRN28x10

__all__ = ["Conv4", "Conv4NoPool", "ConvNet", "DropBlock", "EfficientNetLite0", "ResNet12", "TorchvisionResNet",
           "WRN28x10", "WideResNet"]
