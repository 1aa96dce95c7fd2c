"""ImageClassifier: backbone + optional neck + head on whole images (mmpretrain's ``ImageClassifier``), here the
multi-label classifier of the ``multi_label`` training task."""

# no ``from __future__ import annotations``: the registry validates config values against these annotations
from typing import Any

import torch
from torch import nn

from fewray.algorithms.builder import CLASSIFIERS, NECKS

#: the forward modes and what each returns
MODES = ("tensor", "predict", "loss", "train")


@CLASSIFIERS.register
class ImageClassifier(nn.Module):
    """A plain image classifier: ``head(neck(backbone(x)))`` trained on labelled batches (mmpretrain's
    ``ImageClassifier``, without its data preprocessor: fewray hands models float images in ``[0, 1]`` and the
    ImageNet backbones standardise them themselves).

    With a :class:`~fewray.algorithms.cls_heads.MultiLabelLinearClsHead` (or ``MultiLabelClsHead``) it is the
    multi-label classifier of ML-GCN's baseline (https://arxiv.org/abs/1904.03582): an independent sigmoid per
    class and a binary cross-entropy per class. Its training task is ``multi_label``
    (:mod:`fewray.tasks.multi_label`: shuffled batches with multi-hot targets, validated by mAP). A frozen backbone
    (e.g. ``EfficientNetLite0(frozen=True)``) trains the head alone on fixed ImageNet features (a linear probe);
    otherwise the whole network is fine-tuned (``train.optimizer.lr_mult`` can slow the backbone down).

    Args:
        backbone (nn.Module): ``(N, C, H, W)`` floats in ``[0, 1]`` -> features ``(N, D)`` (or maps the neck
            pools).
        head (nn.Module): a classification head with ``loss(feats, targets) -> {"loss": ...}``, ``predict(feats)
            -> [{"pred_score", "pred_label"}, ...]`` and ``forward(feats) -> logits`` (the multi-label heads).
        neck (dict | None): ``{type: ..., ...}`` built through :data:`~fewray.algorithms.NECKS`, between backbone
            and head. Default None.

    ``forward(img, gt_label=None, mode="tensor")``:
        - ``mode='train'`` (alias ``'loss'``): ``{"loss": ...}`` of the batch, ``gt_label`` the targets (a
          ``(N, C)`` multi-hot tensor, ``-1`` = ignored, or a list of class-index lists);
        - ``mode='tensor'``: the head's logits ``(N, C)``;
        - ``mode='predict'``: one dict per image, ``pred_score`` ``(C,)`` (sigmoid) and ``pred_label`` (the head's
          thr/topk rule); :meth:`predict_scores` gives the scores as one ``(N, C)`` tensor.

    Raises:
        ConfigError: a bad ``neck`` (unknown type or argument, naming ``model.neck``).
        ValueError: an unknown mode, or ``mode='train'`` without ``gt_label``.

    Example::

        >>> from fewray.algorithms import build_classifier
        >>> model = build_classifier({"type": "ImageClassifier", "backbone": {"type": "Conv4", "in_channels": 3},
        ...     "head": {"type": "MultiLabelLinearClsHead", "num_classes": 5, "in_channels": 256}})
        >>> img = torch.rand(4, 3, 32, 32)
        >>> out = model(img, torch.tensor([[1, 0, 0, 1, 0]] * 4), mode="train")
        >>> sorted(out), out["loss"].shape
        (['loss'], torch.Size([]))
        >>> model.eval().predict_scores(img).shape       # sigmoid scores, one column per class
        torch.Size([4, 5])
        >>> type(model).train_task
        'multi_label'
    """

    #: the training task (:mod:`fewray.tasks.multi_label`): shuffled multi-hot batches, validated by mAP
    train_task = "multi_label"

    def __init__(self, backbone: nn.Module, head: nn.Module, neck: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = NECKS.build(dict(neck), "model.neck") if neck else None
        self.head = head

    @property
    def with_neck(self) -> bool:
        """Whether the model has a neck."""
        return self.neck is not None

    def extract_feat(self, img: torch.Tensor) -> torch.Tensor:
        """Features of images ``(N, C, H, W)`` (floats in ``[0, 1]``): the backbone's, through the neck if any."""
        feats = self.backbone(img)
        return self.neck(feats) if self.neck is not None else feats

    def loss(self, img: torch.Tensor, gt_label: Any) -> dict[str, torch.Tensor]:
        """The head's loss dict of a batch (``{"loss": ...}``)."""
        return self.head.loss(self.extract_feat(img), gt_label)

    def predict(self, img: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """One ``{"pred_score", "pred_label"}`` per image (the head's ``predict``)."""
        return self.head.predict(self.extract_feat(img))

    @torch.no_grad()
    def predict_scores(self, img: torch.Tensor) -> torch.Tensor:
        """Scores ``(N, C)``: the sigmoid of the logits, as :meth:`predict`'s ``pred_score`` (no gradient)."""
        return torch.sigmoid(self.head(self.extract_feat(img)))

    def forward(self, img: torch.Tensor, gt_label: Any = None, mode: str = "tensor") -> Any:
        """Dispatch on ``mode`` (see the class docstring)."""
        if mode in ("train", "loss"):
            if gt_label is None:
                raise ValueError(f"{type(self).__name__}.forward(mode={mode!r}) needs gt_label (the targets)")
            return self.loss(img, gt_label)
        if mode == "tensor":
            return self.head(self.extract_feat(img))
        if mode == "predict":
            return self.predict(img)
        raise ValueError(f"unknown forward mode {mode!r} ({', '.join(MODES)})")
