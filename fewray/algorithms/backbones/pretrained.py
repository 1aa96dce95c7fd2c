"""What the ImageNet-pretrained backbones share: input preparation, freezing, and loading a weights file.

fewray hands every backbone float images in ``[0, 1]``, ``(N, C, H, W)``
(:func:`fewray.platform.features.to_float`); networks trained on ImageNet expect RGB images standardised as
they were in training: torchvision's weights with the ImageNet channel mean and std, TensorFlow's
EfficientNet-Lite weights with ``(pixel - 127) / 128``. :class:`ImageNetInput` does that inside the backbone (so
catalogs, episodes and the inference API stay as they are), repeats a grayscale channel to RGB and optionally
resizes.

Weight files are read with :func:`fewray.algorithms.utils.weights.load_weights` (``weights_only=True``: a file
holding Python objects is refused, never run) and must fit the architecture key for key and shape for shape;
nothing here downloads anything.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fewray.core.errors import CheckpointError, ConfigError

#: channel mean and std of ImageNet (RGB, for images in [0, 1]); used by torchvision's and timm's weights
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_in_channels(in_channels: int, owner: str) -> int:
    """``in_channels`` if it is 1 (grayscale, repeated to RGB) or 3 (RGB).

    Raises:
        ConfigError: any other number, naming ``in_channels``.
    """
    if in_channels not in (1, 3):
        raise ConfigError(f"{owner}: in_channels must be 3 (RGB) or 1 (grayscale, repeated to RGB), got "
                          f"{in_channels!r}: its ImageNet weights expect RGB images")
    return in_channels


@torch.fx.wrap
def prepare_input(x: torch.Tensor, in_channels: int, input_size: int | None, mean: torch.Tensor,
                  std: torch.Tensor) -> torch.Tensor:
    """Images ``(N, in_channels, H, W)`` in [0, 1] -> standardised RGB ``(N, 3, H', W')``.

    A 1-channel image is repeated to 3 channels; with ``input_size`` the image is resized (bilinear,
    antialiased) to ``input_size x input_size`` when it has another size. A leaf of ``torch.fx`` traces
    (``torch.fx.wrap``), so ``torchvision.models.feature_extraction.create_feature_extractor`` can trace the
    backbones that call it.

    Raises:
        ValueError: ``x`` is not ``(N, in_channels, H, W)``.
    """
    if x.dim() != 4 or x.shape[1] != in_channels:
        raise ValueError(f"expected images (N, {in_channels}, H, W), got {tuple(x.shape)}")
    if in_channels == 1:
        x = x.expand(-1, 3, -1, -1)
    if input_size is not None and tuple(x.shape[-2:]) != (input_size, input_size):
        x = F.interpolate(x, size=(input_size, input_size), mode="bilinear", align_corners=False, antialias=True)
    return (x - mean) / std


class ImageNetInput(nn.Module):
    """Standardise ``[0, 1]`` images as a network's ImageNet weights expect, grayscale repeated to RGB, optional resize.

    Args:
        in_channels (int): 1 or 3. input_size (int | None): resize to this square side first; None: keep.
        owner (str): the backbone's name, for error messages.
        mean, std (tuple[float, float, float]): per RGB channel, for images in [0, 1]; default the ImageNet
            statistics (:data:`IMAGENET_MEAN`, :data:`IMAGENET_STD`) that torchvision's weights use.

    Shapes:
        ``(N, in_channels, H, W)`` -> ``(N, 3, H, W)`` (or ``(N, 3, input_size, input_size)``).

    Raises:
        ConfigError: ``in_channels`` not 1 or 3. ValueError (forward): an input with other channels.

    Example::

        >>> ImageNetInput(1, input_size=32)(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 3, 32, 32])
    """

    def __init__(self, in_channels: int = 3, input_size: int | None = None, owner: str = "backbone",
                 mean: tuple[float, float, float] = IMAGENET_MEAN,
                 std: tuple[float, float, float] = IMAGENET_STD) -> None:
        super().__init__()
        self.in_channels = check_in_channels(in_channels, owner)
        if input_size is not None and input_size < 8:
            raise ConfigError(f"{owner}: input_size must be at least 8 pixels (or null to keep the image size), "
                              f"got {input_size}")
        self.input_size = input_size
        # not persistent: constants, not weights (state dicts keep the layout of the published weight files)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return prepare_input(x, self.in_channels, self.input_size, self.mean, self.std)


def check_out_indices(out_indices: Iterable[int] | None, num_stages: int, owner: str) -> list[int] | None:
    """``out_indices`` as a sorted list of distinct stage indices in ``0..num_stages-1`` (None stays None).

    Raises:
        ConfigError: an empty list or an index out of range, naming ``out_indices``.
    """
    if out_indices is None:
        return None
    idx = [int(i) for i in out_indices]
    if not idx or any(i < 0 or i >= num_stages for i in idx) or len(set(idx)) != len(idx):
        raise ConfigError(f"{owner}: out_indices must be distinct stage indices in 0..{num_stages - 1}, "
                          f"got {list(out_indices)}")
    return sorted(idx)


def freeze(module: nn.Module) -> None:
    """No gradients for ``module``'s parameters, and every submodule in eval mode (batch-norm statistics kept)."""
    for p in module.parameters():
        p.requires_grad_(False)
    for m in module.modules():
        m.training = False


class Freezable:
    """Mixin of a backbone (an ``nn.Module``) that may be ``frozen``: :func:`freeze` it once built, and ``train()``
    keeps it in eval mode (fixed batch-norm statistics) while the rest of a model trains."""

    frozen: bool = False

    def train(self, mode: bool = True):
        """As ``nn.Module.train``; a frozen backbone stays in eval mode."""
        super().train(mode)
        if self.frozen:
            freeze(self)
        return self


def load_pretrained(module: nn.Module, path: str | Path, owner: str, ignore_prefixes: tuple[str, ...] = ()) -> None:
    """Load the bare state dict in ``path`` into ``module``; the keys must match exactly.

    Args:
        module: the backbone.
        path: a ``.pth``/``.pt`` file holding a state dict (tensors only).
        owner: the backbone's name for messages (``EfficientNetLite0``, ``TorchvisionResNet(resnet50)``).
        ignore_prefixes: keys of the published file that the backbone has not, left out before the
            comparison (the ImageNet classifier, ``_fc.`` / ``fc.``).

    Raises:
        CheckpointError: the file is missing, unreadable, holds Python objects, is not a state dict, or does
            not fit: one line naming the first mismatched key (``'conv1.weight' is missing from the checkpoint
            (320 keys missing)``, ``'x' has shape (64,) in the checkpoint, (32,) in the model``).
    """
    from fewray.algorithms.utils.weights import load_state_checked, load_weights

    p = Path(path).expanduser()
    if not p.is_file():
        raise CheckpointError(f"{owner} weights file not found: {p}")
    state = load_weights(p)
    if isinstance(state, dict):
        state = {k: v for k, v in state.items() if not (isinstance(k, str) and k.startswith(ignore_prefixes))}
    load_state_checked(module, state, f"weights file {p} does not fit {owner}",
                       f"{owner} weights file {p} is not a state dict (it holds a {{type}})")
