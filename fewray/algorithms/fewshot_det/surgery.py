"""TFA's box-predictor surgery: start a K-shot fine-tuning detector from a base-trained one.

mmfewshot's ``tools/detection/misc/initialize_bbox_head.py`` (TFA, Wang et al., ICML 2020,
https://arxiv.org/abs/2003.06957): the base detector predicts the base classes; the fine-tuning detector
predicts base and novel classes, so its predictor's rows are mapped by class *name*:

- ``random_init`` (mmfewshot's README also spells it ``randinit``): base rows copied, novel rows randomly
  initialised (TFA's COCO protocol);
- ``combine``: base rows from the base detector, novel rows from a second detector fine-tuned on the novel classes
  only (``init_from_novel``; TFA's VOC protocol);
- ``remove``: no predictor row copied (every class starts random; a novel-only fine-tuning).

Every other weight (backbone, FPN, RPN, shared FCs) is copied as it is. The meta-learning detectors' per-class
tensors without a background row (:data:`CLASS_ROWS_NO_BACKGROUND`: Meta R-CNN's meta classifier, the stored class
vectors of ``model_init``) are mapped by class name the same way.
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
#: per-class tensors without a background row: the meta-learning detectors' meta classifier and class vectors
CLASS_ROWS_NO_BACKGROUND = ("roi_heads.meta_cls.", "class_vectors", "class_ready")


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


def _rows(name: str, tensor: torch.Tensor, num_classes: int, background: int = 1) -> int:
    """Rows per class of a per-class tensor: 1 (scores, class vectors) or 4 (box deltas)."""
    per = tensor.shape[0] // (num_classes + background)
    if per * (num_classes + background) != tensor.shape[0]:
        raise CheckpointError(f"'{name}' has {tensor.shape[0]} rows, not a multiple of {num_classes + background} "
                              f"classes")
    return per


def apply_surgery(target: dict[str, torch.Tensor], target_classes: list[str], base: dict[str, torch.Tensor],
                  base_classes: list[str], method: str, novel: dict[str, torch.Tensor] | None = None,
                  novel_classes: list[str] | None = None,
                  fresh: tuple[str, ...] = ()) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The fine-tuning detector's state dict after surgery.

    Args:
        target: the freshly built detector's state dict (its predictor rows are the random initialisation).
        target_classes: its class names (row ``i + 1`` is class ``i``; row 0 is background).
        base, base_classes: the base detector's state dict and class names.
        method: ``random_init`` / ``randinit``, ``combine`` or ``remove``.
        novel, novel_classes: for ``combine``, the novel detector's state dict and class names.
        fresh: key fragments of modules the base may lack (they keep their initialisation then): FSCE's
            contrastive branch, a query-support detector's meta conv, aggregation and meta classifier.

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
    per_class = CLASS_ROWS + CLASS_ROWS_NO_BACKGROUND
    for key, value in target.items():
        if key.startswith(per_class):
            continue
        if key not in base:
            if any(f in key for f in (".contrastive_head.", "loss_contrast", *fresh)):  # new branches start random
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
        if not key.startswith(per_class):
            continue
        bg = 1 if key.startswith(CLASS_ROWS) else 0  # rows before the first class
        new = value.clone()
        per = _rows(key, value, len(target_classes), bg)
        for src, src_classes in sources:
            if key not in src:  # e.g. a linear classifier's bias into a bias-free cosine one
                continue
            old = src[key]
            src_per = _rows(key, old, len(src_classes), bg)
            if src_per != per or old.shape[1:] != value.shape[1:]:
                raise CheckpointError(f"'{key}' has shape {tuple(old.shape)} in the checkpoint, "
                                      f"{tuple(value.shape)} in the model")
            if src is base and bg:  # the background row
                new[:per] = old[:per]
            for i, name in enumerate(target_classes):
                if name in src_classes:
                    j = src_classes.index(name)
                    new[(i + bg) * per:(i + bg + 1) * per] = old[(j + bg) * per:(j + bg + 1) * per]
                    if name not in copied:
                        copied.append(name)
        state[key] = new
    return state, copied
