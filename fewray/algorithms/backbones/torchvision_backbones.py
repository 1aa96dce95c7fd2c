"""torchvision's ImageNet ResNets as fewray backbones, their weights read from a local file (never downloaded
unless asked).

ResNet (He, Zhang, Ren and Sun, "Deep Residual Learning for Image Recognition", CVPR 2016,
https://arxiv.org/abs/1512.03385), ResNeXt (Xie et al., CVPR 2017, https://arxiv.org/abs/1611.05431) and
Wide ResNet-50/101 (Zagoruyko and Komodakis, BMVC 2016, https://arxiv.org/abs/1605.07146) from
``torchvision.models``. The weights come from a local ``.pth`` file: either a path given in the config, or the
file torchvision's own download would have written into torch hub's cache
(``torch.hub.get_dir()/checkpoints/resnet50-11ad3fa6.pth`` for ``resnet50`` ``IMAGENET1K_V2``), so a machine
without internet uses weights copied there, and its error names the file it expected.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

from fewray.algorithms.backbones.pretrained import Freezable, ImageNetInput, check_out_indices, freeze, load_pretrained
from fewray.algorithms.builder import BACKBONES
from fewray.core.errors import CheckpointError, ConfigError

#: the torchvision architectures :class:`TorchvisionResNet` builds (all share ResNet's layout)
RESNET_ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
                "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2")


def hub_weights_file(arch: str, weights: str = "DEFAULT") -> tuple[Path, str, str]:
    """Where torchvision keeps the ``weights`` of ``arch`` once downloaded: ``(path, url, full weights name)``.

    The path is ``torch.hub.get_dir()/checkpoints/<file name of the URL>`` (``$TORCH_HOME/hub/checkpoints``,
    by default ``~/.cache/torch/hub/checkpoints``), the file ``torchvision.models.<arch>(weights=...)``
    would read or download.

    Raises:
        ConfigError: ``weights`` is not one of the architecture's weights (naming them).
    """
    from torchvision.models import get_model_weights

    enum = get_model_weights(arch)
    try:
        w = enum[weights]
    except KeyError:
        raise ConfigError(f"TorchvisionResNet({arch}): unknown weights '{weights}' (choose from "
                          f"{', '.join(enum.__members__)})") from None
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(w.url).path), w.url, str(w)


@BACKBONES.register
class TorchvisionResNet(Freezable, nn.Module):
    """A torchvision ResNet / ResNeXt / Wide ResNet (He et al., CVPR 2016, https://arxiv.org/abs/1512.03385)
    with ImageNet weights from a local file, as a feature extractor.

    Takes fewray's images (floats in ``[0, 1]``) and standardises them itself with the ImageNet mean and std
    (torchvision's weights expect that); a 1-channel image is repeated to RGB. The ImageNet classifier
    (``fc``) is not part of the backbone; the other parameters keep torchvision's names (``conv1.weight``,
    ``layer1.0.conv1.weight``, ...), so a torchvision state dict loads as it is.

    Args:
        arch (str): one of :data:`RESNET_ARCHS`. Default ``"resnet50"``.
        pretrained (bool | str): True: torchvision's ``weights`` of ``arch`` from torch hub's cache
            (:func:`hub_weights_file`); a path: a ``.pth`` state dict of this architecture (``fc.*`` may be
            present); False: torchvision's random initialisation. Default True.
        weights (str): which torchvision weights ``pretrained: true`` means (``IMAGENET1K_V1``,
            ``IMAGENET1K_V2``, ``DEFAULT``). Default ``"DEFAULT"`` (V2 for ResNet-50).
        download (bool): when the cached file is absent, let torchvision download it into torch hub's cache
            (checking its hash). Default False: nothing is downloaded, a missing file is an error.
        frozen (bool): no gradients and batch norm always in eval mode (a fixed feature extractor). Default False.
        in_channels (int): 3 (RGB) or 1 (grayscale, repeated to RGB). Default 3.
        input_size (int | None): resize inputs (bilinear, antialiased) to this square side first; None: as
            given (the weights were trained at 224). Default None.
        out_indices (list[int] | None): None: pooled features. Else the maps of these stages: 0..3 are
            ``layer1``..``layer4`` (ResNet-50: 256, 512, 1024, 2048 channels at strides 4, 8, 16, 32); layers
            after the last one asked for are dropped.

    Attributes:
        out_channels (int | list[int]): the pooled feature size (512 for resnet18/34, 2048 for the others), or
            the channels of each returned map.

    Shapes:
        ``(N, in_channels, H, W)`` in [0, 1] -> ``(N, out_channels)``; with ``out_indices`` an ordered dict
        ``{"0": (N, C0, H0, W0), ...}`` named by position (for ``torchvision.ops.FeaturePyramidNetwork``).

    Raises:
        ConfigError: unknown ``arch`` or ``weights``, ``in_channels`` not 1 or 3, ``out_indices`` out of 0..3.
        CheckpointError: the weights file is missing (one line naming the file expected in torch hub's cache
            and where torchvision publishes it), unreadable, holds Python objects, or is of another
            architecture (naming the first key that does not fit).
        ValueError (forward): an input that is not ``(N, in_channels, H, W)``.

    Example::

        >>> net = TorchvisionResNet("resnet18", pretrained=False)
        >>> net(torch.rand(2, 3, 64, 64)).shape
        torch.Size([2, 512])
        >>> maps = TorchvisionResNet("resnet18", pretrained=False, out_indices=[1, 3])(torch.rand(1, 3, 64, 64))
        >>> {name: tuple(m.shape) for name, m in maps.items()}
        {'0': (1, 128, 8, 8), '1': (1, 512, 2, 2)}
    """

    def __init__(
        self,
        arch: str = "resnet50",
        pretrained: bool | str = True,
        weights: str = "DEFAULT",
        download: bool = False,
        frozen: bool = False,
        in_channels: int = 3,
        input_size: int | None = None,
        out_indices: list[int] | None = None,
    ) -> None:
        super().__init__()
        import torchvision.models

        if arch not in RESNET_ARCHS:
            raise ConfigError(f"TorchvisionResNet: unknown arch '{arch}' (choose from {', '.join(RESNET_ARCHS)})")
        name = f"TorchvisionResNet({arch})"
        self.arch = arch
        self.input = ImageNetInput(in_channels, input_size, name)
        self.out_indices = check_out_indices(out_indices, 4, name)
        cached = hub_weights_file(arch, weights) if pretrained is True else None  # unknown weights: ConfigError
        net = torchvision.models.get_model(arch, weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        channels = [layer[-1].conv3.out_channels if hasattr(layer[-1], "conv3") else layer[-1].conv2.out_channels
                    for layer in (self.layer1, self.layer2, self.layer3, self.layer4)]
        if cached is not None:
            path, url, full = cached
            if not path.is_file() and download:
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.hub.download_url_to_file(url, str(path), hash_prefix=path.stem.rsplit("-", 1)[-1])
            if not path.is_file():
                raise CheckpointError(
                    f"{name} ImageNet weights not found: {path} (torchvision's {full}, published at {url}; "
                    f"nothing is downloaded: copy the file there, set download: true, or give pretrained: PATH)")
            load_pretrained(self, path, name, ignore_prefixes=("fc.",))
        elif pretrained is not False:  # a path (an empty one is an error, not random weights)
            load_pretrained(self, pretrained, name, ignore_prefixes=("fc.",))
        self.pretrained = pretrained
        if self.out_indices is None:
            self.out_channels: int | list[int] = channels[-1]
        else:
            self.out_channels = [channels[i] for i in self.out_indices]
            for i in range(max(self.out_indices) + 1, 4):  # after the weights are loaded
                delattr(self, f"layer{i + 1}")
        self.frozen = frozen
        if frozen:
            freeze(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor | OrderedDict[str, torch.Tensor]:
        """Pooled features ``(N, out_channels)``, or the maps of ``out_indices`` (see the class docstring)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(self.input(x)))))
        maps: OrderedDict[str, torch.Tensor] = OrderedDict()
        for i in range(4):
            layer = getattr(self, f"layer{i + 1}", None)
            if layer is None:
                break
            x = layer(x)
            if self.out_indices is not None and i in self.out_indices:
                maps[str(len(maps))] = x
        if self.out_indices is None:
            return F.adaptive_avg_pool2d(x, 1).flatten(1)
        return maps
