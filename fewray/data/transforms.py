"""Training-time image augmentation with ``torchvision.transforms.v2`` (mmfewshot's train pipelines).

Catalog images are stored already resized to the model's input size (``image_size``), which is
mmfewshot's test pipeline; at training time the episode and batch builders (Ray Data) apply one of
these presets to each image independently, on uint8 tensors ``(C, H, W)``:

- ``none``: the stored image (Omniglot, and mmfewshot's test pipeline).
- ``standard``: mmfewshot's natural-image train pipeline for mini-ImageNet / tiered-ImageNet / CUB:
  ``RandomResizedCrop(image_size)``, ``RandomHorizontalFlip()``, ``ColorJitter(0.4, 0.4, 0.4)``.
- ``flip``: ``RandomHorizontalFlip()`` only (cheap; for short CPU schedules).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    import torch
# torch and torchvision are imported when a preset other than ``none`` is built: the Ray Data processes that
# build Omniglot episodes (no augmentation) then never pay their import (about 2.5 s of CPU per process)

AUGMENTATIONS = ("none", "standard", "flip")


def train_transform(augment: str, image_size: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The ``torchvision.transforms.v2`` pipeline of preset ``augment`` (None for ``none``).

    Args:
        augment (str): one of :data:`AUGMENTATIONS`.
        image_size (int): output side in pixels (``RandomResizedCrop``'s size).

    Returns:
        A callable ``uint8 (C, H, W) -> uint8 (C, image_size, image_size)`` or None.

    Raises:
        ValueError: unknown preset.

    Example::

        >>> import torch
        >>> from fewray.data.transforms import train_transform
        >>> t = train_transform("standard", 84)
        >>> t(torch.zeros(3, 84, 84, dtype=torch.uint8)).shape
        torch.Size([3, 84, 84])
    """
    from torchvision.transforms import v2

    if augment == "none":
        return None
    if augment == "flip":
        return v2.RandomHorizontalFlip()
    if augment == "standard":
        return v2.Compose([
            v2.RandomResizedCrop(image_size, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4),
        ])
    raise ValueError(f"unknown augmentation '{augment}' (choose from {', '.join(AUGMENTATIONS)})")


class Augmenter:
    """Applies a :func:`train_transform` preset image by image to uint8 arrays, reproducibly.

    Each call re-seeds torch's RNG from ``(seed, key)`` on a forked RNG state (the global RNG is left as
    it was), so the augmented images of episode / batch ``key`` are the same on every run and worker.

    Args:
        augment (str): preset name; image_size (int): output side; seed (int): base seed.
    """

    def __init__(self, augment: str, image_size: int, seed: int = 0) -> None:
        self.transform = train_transform(augment, image_size)
        self.seed = seed

    def __call__(self, images: np.ndarray, key: int) -> np.ndarray:
        """``(B, C, H, W)`` uint8 -> augmented ``(B, C, image_size, image_size)`` uint8 (``images`` if ``none``)."""
        if self.transform is None:
            return images
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + int(key))
            out = [self.transform(torch.from_numpy(np.ascontiguousarray(img))) for img in images]
        return torch.stack(out).numpy()
