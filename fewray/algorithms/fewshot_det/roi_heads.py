"""FSCE's RoI head: torchvision's ``RoIHeads`` plus the contrastive proposal encoding loss in training."""

from __future__ import annotations

import torch
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss
from torchvision.ops import box_iou

from fewray.algorithms.losses.supervised_contrastive_loss import SupervisedContrastiveLoss


class ContrastiveRoIHead(RoIHeads):
    """torchvision's ``RoIHeads`` whose training step adds FSCE's contrastive loss (Sun et al., CVPR 2021,
    https://arxiv.org/abs/2103.05950; mmfewshot's ``ContrastiveRoIHead``).

    In training, the sampled proposals (ground truth boxes included, as torchvision adds them) are pooled and
    passed through the shared FCs once; the predictor gives the usual classification and box losses, and its
    contrastive branch (:class:`~fewray.algorithms.fewshot_det.bbox_heads.ContrastiveBBoxHead`) embeds the same
    RoI vectors for :class:`~fewray.algorithms.losses.SupervisedContrastiveLoss`, with each proposal's class
    (background = 0) and its IoU with the ground truth box it was matched to (``torchvision.ops.box_iou``).
    Evaluation is torchvision's unchanged.

    Args:
        *args, **kwargs: those of ``RoIHeads`` (its ``box_predictor`` must have ``embed``).
        loss_contrast (SupervisedContrastiveLoss): the loss (FSCE: temperature 0.2, IoU 0.8, weight 0.5).

    Returns (training):
        ``([], {"loss_classifier", "loss_box_reg", "loss_contrast"})``.

    Example::

        >>> from torchvision.ops import MultiScaleRoIAlign
        >>> from torchvision.models.detection.faster_rcnn import TwoMLPHead
        >>> from fewray.algorithms.fewshot_det.bbox_heads import ContrastiveBBoxHead
        >>> head = ContrastiveRoIHead(MultiScaleRoIAlign(["0"], 7, 2), TwoMLPHead(8 * 49, 16),
        ...     ContrastiveBBoxHead(16, 2, mlp_head_channels=8), 0.5, 0.5, 32, 0.25, None, 0.05, 0.5, 10,
        ...     loss_contrast=SupervisedContrastiveLoss(iou_threshold=0.5))
        >>> _, losses = head({"0": torch.rand(1, 8, 16, 16)}, [torch.tensor([[0., 0., 20., 20.]])], [(64, 64)],
        ...                  [{"boxes": torch.tensor([[2., 2., 22., 22.]]), "labels": torch.tensor([1])}])
        >>> sorted(losses)
        ['loss_box_reg', 'loss_classifier', 'loss_contrast']
    """

    def __init__(self, *args, loss_contrast: SupervisedContrastiveLoss | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not hasattr(self.box_predictor, "embed"):
            raise TypeError(f"ContrastiveRoIHead needs a predictor with a contrastive branch (ContrastiveBBoxHead), "
                            f"got {type(self.box_predictor).__name__}")
        self.loss_contrast = loss_contrast or SupervisedContrastiveLoss()

    def forward(self, features, proposals, image_shapes, targets=None):
        """torchvision's ``RoIHeads.forward``; in training the losses above."""
        if not self.training:
            return super().forward(features, proposals, image_shapes, targets)
        proposals, _, labels, regression_targets = self.select_training_samples(proposals, targets)
        vectors = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(vectors)
        loss_classifier, loss_box_reg = fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
        ious = torch.cat([box_iou(p, t["boxes"]).max(dim=1).values if len(t["boxes"]) else p.new_zeros(len(p))
                          for p, t in zip(proposals, targets)])
        loss_contrast = self.loss_contrast(self.box_predictor.embed(vectors), torch.cat(labels), ious)
        return [], {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg, "loss_contrast": loss_contrast}
