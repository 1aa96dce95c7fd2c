"""Image tensors and batched feature extraction (mmfewshot's fast_test: one backbone pass per split)."""

from __future__ import annotations

import numpy as np
import torch


def to_float(img: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 images ``(..., C, H, W)`` in 0..255 -> float32 in [0, 1]."""
    if isinstance(img, np.ndarray):
        img = torch.from_numpy(img)
    return img.float().div_(255.0)


@torch.no_grad()
def extract_features(model: torch.nn.Module, images: np.ndarray, batch_size: int = 512, device: str = "cpu") -> torch.Tensor:
    """Backbone features of a whole split in eval mode.

    Args:
        model: a classifier with ``extract_feat`` (frozen backbone).
        images: ``(N, C, H, W)`` uint8.
        batch_size: images per backbone pass.
        device: ``"cpu"`` or ``"cuda"``.

    Returns:
        ``(N, D)`` float32 features on the CPU.
    """
    was_training = model.training
    model.eval()
    out = []
    for s in range(0, len(images), batch_size):
        x = to_float(images[s : s + batch_size]).to(device, non_blocking=True)
        out.append(model.extract_feat(x).float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)
