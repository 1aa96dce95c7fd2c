"""TFA's box-predictor surgery: start a K-shot fine-tuning detector from a base-trained one.

mmfewshot's ``tools/detection/misc/initialize_bbox_head.py`` (TFA, Wang et al., ICML 2020,
https://arxiv.org/abs/2003.06957): the base detector predicts the base classes; the fine-tuning detector
predicts base and novel classes, so its predictor's rows are mapped by class *name*:

- ``random_init`` (mmfewshot's README also spells it ``randinit``): base rows copied, novel rows randomly
  initialised (TFA's COCO protocol);
- ``combine``: base rows from the base detector, novel rows from a second detector fine-tuned on the novel classes
  only (``init_from_novel``; TFA's VOC protocol);
- ``remove``: no predictor row copied (every class starts random; a novel-only fine-tuning).

Every other weight (backbone, FPN, RPN, shared FCs) is copied as it is.
"""

from __future__ import annotations

from typing import Any

import torch

from fewray.core.errors import CheckpointError, ConfigError

#: the surgery names and their spellings
SURGERIES = {"random_init": "random_init", "randinit": "random_init", "combine": "combine", "remove": "remove"}
PREDICTOR = "roi_heads.box_predictor."
#: the predictor's tensors with one row (scores) or four (box deltas) per class, background first
CLASS_ROWS = (PREDICTOR + "cls_score.", PREDICTOR + "bbox_pred.")


def surgery_name(name: str) -> str:
    """The canonical name of a surgery (``randinit`` -> ``random_init``).

    Raises:
        ConfigError: an unknown name, listing the accepted ones.

    Example::

        >>> surgery_name("randinit"), surgery_name("combine")
        ('random_init', 'combine')
    """
    if name not in SURGERIES:
        raise ConfigError(f"model.surgery: unknown surgery {name!r} (choose from combine, remove, random_init; "
                          f"'randinit' as mmfewshot's README spells it is accepted too)")
    return SURGERIES[name]


def _rows(name: str, tensor: torch.Tensor, num_classes: int) -> int:
    """Rows per class of a predictor tensor: 1 (scores) or 4 (box deltas)."""
    per = tensor.shape[0] // (num_classes + 1)
    if per * (num_classes + 1) != tensor.shape[0]:
        raise CheckpointError(f"'{name}' has {tensor.shape[0]} rows, not a multiple of {num_classes + 1} classes")
    return per


def apply_surgery(target: dict[str, torch.Tensor], target_classes: list[str], base: dict[str, torch.Tensor],
                  base_classes: list[str], method: str, novel: dict[str, torch.Tensor] | None = None,
                  novel_classes: list[str] | None = None) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The fine-tuning detector's state dict after surgery.

    Args:
        target: the freshly built detector's state dict (its predictor rows are the random initialisation).
        target_classes: its class names (row ``i + 1`` is class ``i``; row 0 is background).
        base, base_classes: the base detector's state dict and class names.
        method: ``random_init`` / ``randinit``, ``combine`` or ``remove``.
        novel, novel_classes: for ``combine``, the novel detector's state dict and class names.

    Returns:
        ``(state, copied)``: the new state dict (every non-predictor key from ``base``) and the class names whose
        predictor rows came from a checkpoint.

    Raises:
        ConfigError: an unknown method; ``combine`` without a novel checkpoint.
        CheckpointError: a non-predictor weight missing from ``base`` or of another shape (naming the key).

    Example::

        >>> t = {"roi_heads.box_predictor.cls_score.weight": torch.zeros(4, 2)}
        >>> b = {"roi_heads.box_predictor.cls_score.weight": torch.tensor([[9., 9.], [1., 1.], [2., 2.]])}
        >>> state, copied = apply_surgery(t, ["cat", "dog", "cow"], b, ["dog", "cat"], "randinit")
        >>> state["roi_heads.box_predictor.cls_score.weight"].tolist(), copied
        ([[9.0, 9.0], [2.0, 2.0], [1.0, 1.0], [0.0, 0.0]], ['cat', 'dog'])
    """
    method = surgery_name(method)
    if method == "combine" and novel is None:
        raise ConfigError("model.surgery: combine needs model.init_from_novel (a detector fine-tuned on the novel "
                          "classes)")
    state: dict[str, Any] = {}
    for key, value in target.items():
        if key.startswith(CLASS_ROWS):
            continue
        if key not in base:
            if ".contrastive_head." in key or "loss_contrast" in key:  # FSCE's new branch starts random
                state[key] = value
                continue
            raise CheckpointError(f"the base checkpoint has no '{key}' (another architecture?)")
        if tuple(base[key].shape) != tuple(value.shape):
            raise CheckpointError(f"'{key}' has shape {tuple(base[key].shape)} in the base checkpoint, "
                                  f"{tuple(value.shape)} in the model")
        state[key] = base[key]
    sources = [] if method == "remove" else [(base, base_classes)]
    if method == "combine":
        sources.append((novel, novel_classes or []))
    copied: list[str] = []
    for key, value in target.items():
        if not key.startswith(CLASS_ROWS):
            continue
        new = value.clone()
        per = _rows(key, value, len(target_classes))
        for src, src_classes in sources:
            if key not in src:  # e.g. a linear classifier's bias into a bias-free cosine one
                continue
            old = src[key]
            src_per = _rows(key, old, len(src_classes))
            if src_per != per or old.shape[1:] != value.shape[1:]:
                raise CheckpointError(f"'{key}' has shape {tuple(old.shape)} in the checkpoint, "
                                      f"{tuple(value.shape)} in the model")
            if src is base:  # the background row
                new[:per] = old[:per]
            for i, name in enumerate(target_classes):
                if name in src_classes:
                    j = src_classes.index(name)
                    new[(i + 1) * per:(i + 2) * per] = old[(j + 1) * per:(j + 2) * per]
                    if name not in copied:
                        copied.append(name)
        state[key] = new
    return state, copied
