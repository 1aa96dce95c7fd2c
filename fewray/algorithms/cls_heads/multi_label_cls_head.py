"""Multi-label classification heads (mmpretrain's ``MultiLabelClsHead`` and ``MultiLabelLinearClsHead``).

An image may hold several classes at once (a COCO photo with a person, a dog and a frisbee). Each class gets
an independent sigmoid score, trained with a binary cross-entropy per class, and a class is predicted when its
score passes a threshold ``thr`` (or is among the ``topk`` best). This is the standard multi-label setup of
ML-GCN ("Multi-Label Image Recognition with Graph Convolutional Networks", Chen, Wei, Wang and Guo, CVPR 2019,
https://arxiv.org/abs/1904.03582) and ASL (https://arxiv.org/abs/2009.14119), as mmpretrain implements it.

fewray keeps mmpretrain's two classes and names:

- :class:`MultiLabelClsHead` has **no parameters**: its input already is the logits ``(N, C)`` (a backbone or
  neck that ends in ``C`` channels); it adds the loss and the prediction rule.
- :class:`MultiLabelLinearClsHead` adds the fully connected layer ``(N, in_channels) -> (N, num_classes)``.

Targets (mmpretrain's ``data_samples``) are given as plain data, either

- a ``(N, C)`` tensor/array (multi-hot ``{0, 1}``, or soft scores in ``[0, 1]`` like mmpretrain's ``gt_score``;
  ``-1`` marks an entry to ignore, such as a VOC class present only as "difficult" objects: it gets weight 0
  in the loss), or
- a length-``N`` list of class-index lists (``[[0, 3], [], [2]]``; an empty list is an image of no class).
  A Python list is always read as index lists, never as multi-hot rows (a repeated index is an error).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from fewray.algorithms.builder import HEADS
from fewray.algorithms.heads.utils import build_loss
from fewray.core.multi_label import resolve_thr_topk

#: the default loss of both heads (mmpretrain's): binary cross-entropy per class
DEFAULT_LOSS: dict[str, Any] = {"type": "CrossEntropyLoss", "use_sigmoid": True}


def to_multi_hot(targets: Any, num_samples: int, num_classes: int) -> torch.Tensor:
    """Targets as a float ``(num_samples, num_classes)`` tensor (multi-hot, soft scores, ``-1`` = ignore).

    Args:
        targets: a ``(N, C)`` tensor or array with values ``-1`` or in ``[0, 1]``, or a length-``N`` list/tuple
            of class-index collections (lists, tuples, sets, 1-D tensors or arrays of distinct ints in
            ``0..C-1``). A multi-hot matrix must be a tensor or array: a Python list is always read as index lists.
        num_samples (int): ``N``, the batch size the targets must describe.
        num_classes (int): ``C``.

    Returns:
        A float32 tensor ``(N, C)`` on the CPU (the caller moves it).

    Raises:
        ValueError: a matrix of another shape or with values outside ``{-1} U [0, 1]``, a sequence of another
            length, or a class index outside ``0..C-1`` or twice in one sample's list.

    Example::

        >>> to_multi_hot([[0, 2], []], num_samples=2, num_classes=3)
        tensor([[1., 0., 1.],
                [0., 0., 0.]])
    """
    if isinstance(targets, (torch.Tensor, np.ndarray)) and np.ndim(targets) == 2:
        t = torch.as_tensor(targets).detach().to("cpu", torch.float32)
        if tuple(t.shape) != (num_samples, num_classes):
            raise ValueError(f"multi-hot targets must have shape ({num_samples}, {num_classes}) "
                             f"(samples, classes), got {tuple(t.shape)}")
        if not bool((((t >= 0) & (t <= 1)) | (t == -1)).all()):
            raise ValueError("multi-hot targets must hold 1 (positive), 0 (negative), a soft score in [0, 1] "
                             "or -1 (ignored)")
        return t
    if not isinstance(targets, (list, tuple)):
        shape = f" of shape {tuple(targets.shape)}" if hasattr(targets, "shape") else ""
        raise ValueError(f"targets must be a (N, C) multi-hot tensor or a list of class-index lists, got "
                         f"{type(targets).__name__}{shape}")
    if len(targets) != num_samples:
        raise ValueError(f"targets describe {len(targets)} samples but the batch has {num_samples}")
    out = torch.zeros(num_samples, num_classes)
    for i, idx in enumerate(targets):
        idx = torch.as_tensor(sorted(idx) if isinstance(idx, (set, frozenset)) else idx).reshape(-1)
        if idx.numel() == 0:
            continue
        if idx.is_floating_point() or idx.dtype == torch.bool:
            raise ValueError(f"targets of sample {i} must be class indices (ints), got {idx.dtype}")
        bad = idx[(idx < 0) | (idx >= num_classes)]
        if bad.numel():
            raise ValueError(f"targets of sample {i} hold class index {int(bad[0])} outside 0..{num_classes - 1}")
        if idx.unique().numel() < idx.numel():
            raise ValueError(f"targets of sample {i} repeat a class index ({idx.tolist()}): a list holds class "
                             f"indices; give a multi-hot matrix as a tensor or array")
        idx = idx.long()
        out[i, idx] = 1.0
    return out


@HEADS.register
class MultiLabelClsHead(nn.Module):
    """Multi-label head on logits: sigmoid scores, a binary cross-entropy per class, thresholded predictions.

    mmpretrain's ``MultiLabelClsHead`` (the rule of ML-GCN, https://arxiv.org/abs/1904.03582): it has no layer
    of its own, so its input features already are the logits ``(N, C)``; use :class:`MultiLabelLinearClsHead`
    to add a fully connected layer.

    Args:
        loss (dict | None): loss config ``{type: ..., **kwargs}`` from :data:`~fewray.algorithms.LOSSES`.
            Default ``{"type": "CrossEntropyLoss", "use_sigmoid": True}`` (binary cross-entropy per class).
            It is called as ``loss(logits, target, weight=..., avg_factor=N)``: with ``reduction='mean'`` the
            loss is summed over classes and averaged over the ``N`` samples (mmpretrain's).
        thr (float | None): a class is predicted when its sigmoid score is ``>= thr`` (in ``[0, 1]``).
        topk (int | None): without ``thr``, the ``topk`` best-scoring classes of each sample are predicted.
            If both ``thr`` and ``topk`` are set, ``thr`` decides (with a :class:`UserWarning`); if neither,
            ``thr = 0.5``. Default None for both.

    Inputs:
        ``feats``: a tuple/list of per-stage features whose last item is the logits ``(N, C)``
        (:meth:`pre_logits` takes ``feats[-1]``), or that tensor itself.
        ``data_samples`` / ``targets``: a ``(N, C)`` multi-hot (or soft, or ``-1`` = ignore) tensor, or a
        list of ``N`` class-index lists (see :func:`to_multi_hot`).

    Outputs:
        ``forward(feats)``: logits ``(N, C)``; ``forward(feats, targets)`` and :meth:`loss`: ``{"loss": scalar}``;
        :meth:`predict`: one dict per sample with ``pred_score`` ``(C,)`` (sigmoid) and ``pred_label``
        (a 1-D int64 tensor of class indices: ascending for ``thr``, best first for ``topk``; possibly empty).

    Raises:
        ValueError: ``thr`` outside ``[0, 1]`` or ``topk < 1``; targets that do not fit the logits;
            ``topk`` larger than the number of classes at :meth:`predict`.
        ConfigError: an unknown loss type or loss argument.

    Example::

        >>> head = MultiLabelClsHead()
        >>> logits = torch.tensor([[2.0, -1.0, 0.0], [-3.0, 3.0, 1.0]])
        >>> head((logits,), [[0], [1, 2]])["loss"].shape
        torch.Size([])
        >>> [p["pred_label"].tolist() for p in head.predict((logits,))]  # sigmoid >= 0.5
        [[0, 2], [1, 2]]
    """

    def __init__(self, loss: dict[str, Any] | None = None, thr: float | None = None, topk: int | None = None) -> None:
        super().__init__()
        self.loss_module = build_loss(dict(loss) if loss is not None else dict(DEFAULT_LOSS), "CrossEntropyLoss")
        self.thr, self.topk = resolve_thr_topk(thr, topk, type(self).__name__)

    def pre_logits(self, feats: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """The last stage of a tuple of backbone features (``feats[-1]``), or ``feats`` if it is one tensor."""
        if isinstance(feats, torch.Tensor):
            return feats
        if not isinstance(feats, (tuple, list)) or not feats:
            raise ValueError(f"feats must be a tensor or a non-empty tuple of tensors, got {type(feats).__name__}")
        return feats[-1]

    def logits(self, feats: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Class logits ``(N, C)``: here :meth:`pre_logits` itself (this head has no layer)."""
        return self.pre_logits(feats)

    def forward(self, feats: torch.Tensor | Sequence[torch.Tensor], targets: Any = None) -> Any:
        """Logits ``(N, C)``; with ``targets`` (torchvision's training contract) the loss dict of :meth:`loss`."""
        if targets is not None:
            return self.loss(feats, targets)
        return self.logits(feats)

    def loss(self, feats: torch.Tensor | Sequence[torch.Tensor], data_samples: Any,
             **kwargs: Any) -> dict[str, torch.Tensor]:
        """``{"loss": loss_module(logits, multi_hot, weight, avg_factor=N)}``.

        Entries of the target equal to ``-1`` are ignored (weight 0); a per-sample ``weight`` ``(N,)`` or an
        element-wise one ``(N, C)`` in ``kwargs`` is multiplied in. Other ``kwargs`` go to the loss module.
        """
        logits = self.logits(feats)
        n, c = logits.shape
        target = to_multi_hot(data_samples, n, c).to(logits.device)
        weight = kwargs.pop("weight", None)
        ignored = target < 0
        if bool(ignored.any()):
            keep = (~ignored).to(logits.dtype)
            if weight is not None:
                weight = weight.to(logits.dtype)
                keep = keep * (weight[:, None] if weight.dim() == 1 else weight)
            weight, target = keep, target.clamp_min(0)
        kwargs.setdefault("avg_factor", n)
        return {"loss": self.loss_module(logits, target, weight=weight, **kwargs)}

    def predict(self, feats: torch.Tensor | Sequence[torch.Tensor],
                data_samples: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """Per-sample ``{"pred_score": (C,) sigmoid scores, "pred_label": 1-D int64 class indices}``.

        Args:
            feats: as :meth:`forward`.
            data_samples (list[dict] | None): if given, one dict per sample that receives ``pred_score`` and
                ``pred_label`` (mmpretrain sets them on its data samples) and is returned; else new dicts.

        Raises:
            ValueError: ``topk`` larger than the number of classes, or ``data_samples`` of another length.
        """
        scores = torch.sigmoid(self.logits(feats))
        n, c = scores.shape
        if data_samples is None:
            data_samples = [{} for _ in range(n)]
        elif len(data_samples) != n:
            raise ValueError(f"{len(data_samples)} data_samples for a batch of {n}")
        if self.thr is None and self.topk > c:
            raise ValueError(f"topk={self.topk} is more than the {c} classes")
        for sample, score in zip(data_samples, scores):
            if self.thr is not None:
                label = torch.nonzero(score >= self.thr).flatten()
            else:
                label = score.topk(self.topk).indices
            sample["pred_score"], sample["pred_label"] = score, label
        return data_samples


@HEADS.register
class MultiLabelLinearClsHead(MultiLabelClsHead):
    """:class:`MultiLabelClsHead` with a fully connected layer: ``(N, in_channels)`` -> logits ``(N, num_classes)``.

    mmpretrain's ``MultiLabelLinearClsHead`` (weights drawn from ``Normal(0, 0.01)``, bias 0, as its
    ``init_cfg``), e.g. on the pooled features of a ResNet for the multi-label benchmarks of ML-GCN
    (https://arxiv.org/abs/1904.03582). Features of more dimensions (``(N, D, 1, 1)``) are flattened.

    Args:
        num_classes (int): number of classes ``C`` (>= 1).
        in_channels (int): feature dimension ``D`` (>= 1).
        loss, thr, topk: as :class:`MultiLabelClsHead`.

    Raises:
        ValueError: ``num_classes`` or ``in_channels`` < 1; as :class:`MultiLabelClsHead`.

    Example::

        >>> head = MultiLabelLinearClsHead(num_classes=4, in_channels=16, topk=2)
        >>> feats = (torch.randn(3, 16),)
        >>> head(feats).shape
        torch.Size([3, 4])
        >>> sorted(head(feats, torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 0]])))
        ['loss']
        >>> [len(p["pred_label"]) for p in head.predict(feats)]
        [2, 2, 2]
    """

    def __init__(self, num_classes: int, in_channels: int, loss: dict[str, Any] | None = None,
                 thr: float | None = None, topk: int | None = None) -> None:
        if num_classes < 1 or in_channels < 1:
            raise ValueError(f"num_classes and in_channels must be >= 1, got {num_classes}, {in_channels}")
        super().__init__(loss, thr, topk)
        self.num_classes, self.in_channels = num_classes, in_channels
        self.fc = nn.Linear(in_channels, num_classes)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def logits(self, feats: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """``fc(pre_logits(feats).flatten(1))``: logits ``(N, num_classes)``."""
        return self.fc(self.pre_logits(feats).flatten(1))
