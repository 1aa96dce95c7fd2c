"""Box heads of the detectors' RoI stage: the shared FCs (torchvision's ``TwoMLPHead``) and the predictors.

A predictor maps the shared FCs' RoI vectors ``(R, D)`` to ``(class scores (R, C + 1), box deltas
(R, (C + 1) * 4))``, background at index 0 (torchvision's ``FastRCNNPredictor`` contract), so each drops into
``torchvision.models.detection.roi_heads.RoIHeads``. The config's ``model.head.type`` picks one:

==========================  ===============================================================================
``Shared2FCBBoxHead``       a linear classifier (mmdet's name; torchvision's ``FastRCNNPredictor``)
``CosineSimBBoxHead``       TFA w/cos: scaled cosine similarity to bias-free class weights
``ContrastiveBBoxHead``     FSCE: a predictor plus an MLP to a 128-d embedding for its contrastive loss
==========================  ===============================================================================
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fewray.core.registry import Registry

#: ``model.head.type`` of a detector -> predictor class
BBOX_HEADS = Registry("bbox head")


def _init_predictor(cls_score: nn.Linear, bbox_pred: nn.Linear) -> None:
    nn.init.normal_(cls_score.weight, std=0.01)
    nn.init.normal_(bbox_pred.weight, std=0.001)
    for layer in (cls_score, bbox_pred):
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)


@BBOX_HEADS.register()
class Shared2FCBBoxHead(nn.Module):
    """Faster R-CNN's box predictor (Ren et al., NeurIPS 2015, https://arxiv.org/abs/1506.01497): a linear
    classifier over ``num_classes + 1`` (background first) and class-specific box deltas, on the RoI vectors of
    the two shared FCs.

    Args:
        in_channels (int): the shared FCs' width ``D`` (1024). num_classes (int): foreground classes ``C``.

    Shapes:
        ``(R, D)`` (or ``(R, D, 1, 1)``) -> ``((R, C + 1), (R, (C + 1) * 4))``.

    Example::

        >>> scores, deltas = Shared2FCBBoxHead(16, 3)(torch.rand(5, 16))
        >>> tuple(scores.shape), tuple(deltas.shape)
        ((5, 4), (5, 16))
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.cls_score = nn.Linear(in_channels, num_classes + 1)
        self.bbox_pred = nn.Linear(in_channels, (num_classes + 1) * 4)
        _init_predictor(self.cls_score, self.bbox_pred)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores ``(R, C + 1)`` of RoI vectors ``(R, D)``."""
        return self.cls_score(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scores (R, C + 1), deltas (R, (C + 1) * 4))``."""
        x = x.flatten(1)
        return self.classify(x), self.bbox_pred(x)


@BBOX_HEADS.register()
class CosineSimBBoxHead(Shared2FCBBoxHead):
    """TFA's cosine-similarity box classifier (Wang et al., "Frustratingly Simple Few-Shot Object Detection",
    ICML 2020, https://arxiv.org/abs/2003.06957; mmfewshot's ``CosineSimBBoxHead``): the score of class ``c`` is
    ``scale * cos(x, w_c)``, the RoI vector and the bias-free class weights L2-normalised, which the paper found
    to reduce the intra-class variance and help novel classes. Box deltas stay linear.

    Args:
        in_channels (int): ``D``. num_classes (int): ``C``. scale (float): the cosine's multiplier (TFA: 20).

    Example::

        >>> head = CosineSimBBoxHead(16, 3, scale=20.0)
        >>> scores, _ = head(torch.rand(5, 16))
        >>> bool(scores.abs().max() <= 20.0 + 1e-4), head.cls_score.bias is None
        (True, True)
    """

    def __init__(self, in_channels: int, num_classes: int, scale: float = 20.0) -> None:
        super().__init__(in_channels, num_classes)
        self.cls_score = nn.Linear(in_channels, num_classes + 1, bias=False)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        self.scale = float(scale)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """``scale * cos(x, w_c)`` for every class ``c`` (background included): ``(R, C + 1)``."""
        return self.scale * F.linear(F.normalize(x, dim=1), F.normalize(self.cls_score.weight, dim=1))


@BBOX_HEADS.register()
class ContrastiveBBoxHead(CosineSimBBoxHead):
    """FSCE's box head (Sun et al., "FSCE: Few-Shot Object Detection via Contrastive Proposal Encoding", CVPR
    2021, https://arxiv.org/abs/2103.05950; mmfewshot's ``ContrastiveBBoxHead``): the cosine predictor plus a
    contrastive branch, an MLP (``D -> D -> mlp_head_channels``, ReLU between) whose L2-normalised output the
    :class:`~fewray.algorithms.fewshot_det.roi_heads.ContrastiveRoIHead` feeds to
    :class:`~fewray.algorithms.losses.SupervisedContrastiveLoss`.

    Args:
        in_channels (int): ``D``. num_classes (int): ``C``. scale (float): the cosine's multiplier (20).
        mlp_head_channels (int): embedding width (FSCE: 128).
        cosine (bool): True: the cosine classifier (mmfewshot's FSCE configs); False: a linear one.

    Example::

        >>> head = ContrastiveBBoxHead(16, 3, mlp_head_channels=8)
        >>> z = head.embed(torch.rand(5, 16))
        >>> tuple(z.shape), bool(torch.allclose(z.norm(dim=1), torch.ones(5)))
        ((5, 8), True)
    """

    def __init__(self, in_channels: int, num_classes: int, scale: float = 20.0, mlp_head_channels: int = 128,
                 cosine: bool = True) -> None:
        super().__init__(in_channels, num_classes, scale)
        self.cosine = cosine
        if not cosine:
            self.cls_score = nn.Linear(in_channels, num_classes + 1)
            _init_predictor(self.cls_score, self.bbox_pred)
        self.contrastive_head = nn.Sequential(nn.Linear(in_channels, in_channels), nn.ReLU(inplace=True),
                                              nn.Linear(in_channels, mlp_head_channels))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Cosine (or linear) class scores ``(R, C + 1)``."""
        return super().classify(x) if self.cosine else self.cls_score(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The contrastive embedding ``(R, mlp_head_channels)``, unit length."""
        return F.normalize(self.contrastive_head(x.flatten(1)), dim=1)
