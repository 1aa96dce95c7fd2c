"""Image tensors and batched feature extraction (mmfewshot's fast_test: one backbone pass per split)."""

from __future__ import annotations

import numpy as np
import torch


def to_float(img: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 images ``(N, C, H, W)`` in 0..255 -> float32 in [0, 1], channels-last in memory.

    Channels-last (NHWC) convolutions are 1.5-2x faster than NCHW on CPU here (see
    ``benchmarks/README.md``); shapes and values are unchanged.
    """
    if isinstance(img, np.ndarray):
        img = torch.from_numpy(img)
    x = img.float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """Store the 4-D weights of ``model`` channels-last (in place), to match :func:`to_float`; a model whose
    ``prefers_channels_last`` is False (MAML) is returned as it is."""
    if not getattr(model, "prefers_channels_last", True):
        return model
    return model.to(memory_format=torch.channels_last)


@torch.inference_mode()
def extract_features(model: torch.nn.Module, images: np.ndarray, batch_size: int = 128, device: str = "cpu") -> torch.Tensor:
    """Backbone features of a whole split in eval mode (mmfewshot's fast_test feature pass).

    Args:
        model: a classifier with ``extract_feat`` (frozen backbone).
        images: ``(N, C, H, W)`` uint8.
        batch_size: images per backbone pass; for Conv4 on 2 CPU cores 128-256 measured fastest
            (``benchmarks/metatest_speed.py`` tunes it).
        device: ``"cpu"`` or ``"cuda"``.

    Returns:
        ``(N, D)`` float32 features on the CPU.
    """
    return batched_outputs(model, images, "extract_feat", batch_size, device)


def batched_outputs(model: torch.nn.Module, images: np.ndarray, method: str, batch_size: int = 128,
                    device: str = "cpu") -> torch.Tensor:
    """``model.<method>`` of uint8 images ``(N, C, H, W)`` scaled to [0, 1], in eval mode and no-grad batches of
    ``batch_size``, concatenated on the CPU as float32 (``extract_feat``: features; ``predict_scores``: a multi-label
    model's sigmoids); the model's train/eval mode is restored."""
    was_training = model.training
    model.eval()
    channels_last(model)
    out = []
    with torch.no_grad():  # not inference_mode: fine-tune heads train on these features
        for s in range(0, len(images), batch_size):
            x = to_float(images[s : s + batch_size]).to(device, non_blocking=True)
            out.append(getattr(model, method)(x).float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)
