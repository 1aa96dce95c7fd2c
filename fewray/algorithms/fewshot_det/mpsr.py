"""MPSR: Faster R-CNN trained with an auxiliary branch of multi-scale positive samples.

Wu, Liu, Huang, Wang, "Multi-Scale Positive Sample Refinement for Few-Shot Object Detection", ECCV 2020
(https://arxiv.org/abs/2007.09384); mmfewshot's ``MPSR``, ``TwoBranchRPNHead`` and ``TwoBranchRoIHead``. Few-shot
sets have few objects at few scales; MPSR crops each training object (``CropInstance``) and resizes it to several
scales (:mod:`fewray.data.detection.mpsr`), and trains on them as extra positives:

- RPN: each scale's crop goes through the backbone and FPN; on the pyramid level ``rpn_select_levels[k]`` chosen
  for that scale, the anchors of the map's centre (a 3-cell border dropped, as mmfewshot) are all objects: a
  binary cross-entropy of their objectness towards 1 (``loss_rpn_cls_auxiliary``), summed and normalised, as
  mmfewshot's ``TwoBranchRPNHead``, by the main RPN's sampled anchors plus the auxiliary ones (so the crops weigh
  as extra samples of the RPN's batch, not as a second loss of their own);
- RoI head: the level ``roi_select_levels[k]``'s whole map, pooled to the RoI size, through the shared FCs and the
  classifier: cross-entropy towards the object's class (``loss_cls_auxiliary``), weighted 0.1 (mmfewshot's
  ``TwoBranchBBoxHead.auxiliary_loss_weight``).

With both weights at 1.0 and each loss a mean of its own, a first version let the crops' 60-way classification (at
chance, cross-entropy ~4) outweigh the detector's losses ten to one; its base training on the COCO images of
../shared/data fell from the Faster R-CNN base's BASE AP 1.28 to 0.00 (AP50 0.04) in 1000 steps.

Testing is the plain Faster R-CNN: the auxiliary branch only shapes the features in training.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from fewray.algorithms.builder import DETECTORS
from fewray.algorithms.fewshot_det.faster_rcnn import FewShotFasterRCNN
from fewray.core.errors import ConfigError


@DETECTORS.register(name="MPSR")
class MPSR(FewShotFasterRCNN):
    """MPSR (module docstring) on :class:`FewShotFasterRCNN`; trained by the ``mpsr_detection`` task
    (``data.mpsr.scales``: the crops' sides).

    Args:
        rpn_select_levels (list[int]): per auxiliary scale, the pyramid level (0 = the finest) its RPN loss uses.
        roi_select_levels (list[int]): per auxiliary scale, the level its RoI loss pools (same length).
        aux_rpn_weight (float): the auxiliary objectness loss's weight on top of the shared normalisation (module
            docstring). Default 1.0 (mmfewshot's).
        aux_roi_weight (float): the auxiliary classification loss's weight. Default 0.1 (mmfewshot's).
        Others: :class:`FewShotFasterRCNN`'s (``init_from`` / ``surgery`` for fine-tuning).

    Training: ``model(mode="train", images, targets, aux_images=[(B, 3, s_k, s_k) floats in [0, 1] per scale],
    aux_labels=(B,) in 0..C-1)`` -> torchvision's four losses + ``loss_rpn_cls_auxiliary`` +
    ``loss_cls_auxiliary``. Prediction: as :class:`FewShotFasterRCNN`.

    Raises:
        ConfigError: select levels of different lengths, or a level the pyramid does not have.

    Example::

        >>> det = MPSR({"type": "EfficientNetLite0", "pretrained": False, "out_indices": [2, 4, 6]},
        ...            class_names=["cat", "dog"], min_size=64, max_size=96, neck={"out_channels": 16},
        ...            rpn_select_levels=[0, 1], roi_select_levels=[0, 0])
        >>> losses = det(mode="train", images=[torch.rand(3, 64, 80)],
        ...              targets=[{"boxes": torch.tensor([[4., 4., 40., 50.]]), "labels": torch.tensor([2])}],
        ...              aux_images=[torch.rand(1, 3, 64, 64), torch.rand(1, 3, 128, 128)], aux_labels=torch.tensor([1]))
        >>> sorted(losses)[:3]
        ['loss_box_reg', 'loss_classifier', 'loss_cls_auxiliary']
        >>> len(losses)
        6
    """

    train_task = "mpsr_detection"

    def __init__(self, *args: Any, rpn_select_levels: list[int] | None = None,
                 roi_select_levels: list[int] | None = None, aux_rpn_weight: float = 1.0,
                 aux_roi_weight: float = 0.1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rpn_select_levels = list(rpn_select_levels or [0, 1, 2])
        self.roi_select_levels = list(roi_select_levels or [0, 0, 0])
        levels = [str(i) for i in range(len(self.backbone.body.out_channels))] + ["pool"]
        if len(self.rpn_select_levels) != len(self.roi_select_levels):
            raise ConfigError(f"model.rpn_select_levels ({len(self.rpn_select_levels)}) and model.roi_select_levels "
                              f"({len(self.roi_select_levels)}) need one level per auxiliary scale each")
        bad = [lv for lv in self.rpn_select_levels + self.roi_select_levels if not 0 <= lv < len(levels)]
        if bad:
            raise ConfigError(f"MPSR select level {bad[0]} is not a pyramid level (0..{len(levels) - 1})")
        self.level_names = levels
        self.aux_rpn_weight, self.aux_roi_weight = float(aux_rpn_weight), float(aux_roi_weight)

    def auxiliary_losses(self, aux_images: list[torch.Tensor], aux_labels: torch.Tensor,
                         num_images: int = 1) -> dict[str, torch.Tensor]:
        """``{"loss_rpn_cls_auxiliary", "loss_cls_auxiliary"}`` of the multi-scale crops (module docstring): the
        objectness cross-entropy summed over every selected anchor of every scale and divided by those anchors
        plus the main RPN's samples (``rpn.batch_size_per_image`` x ``num_images``, the query images of the step),
        the classification cross-entropy averaged over every crop of every scale.

        Raises:
            ValueError: not one image batch per select level.
        """
        if len(aux_images) != len(self.rpn_select_levels):
            raise ValueError(f"MPSR has {len(self.rpn_select_levels)} auxiliary scales (rpn_select_levels), got "
                             f"{len(aux_images)} image batches")
        objectness, class_logits = [], []
        size = self.roi_heads.box_roi_pool.output_size
        for images, r, q in zip(aux_images, self.rpn_select_levels, self.roi_select_levels):
            feats = list(self.backbone(images).values())
            f = self.rpn.head.conv(feats[r])  # torchvision's RPN head: 3 x 3 conv + ReLU
            if f.shape[-1] > 6 and f.shape[-2] > 6:
                f = f[:, :, 3:-3, 3:-3]  # the centre, the crop's object (mmfewshot's TwoBranchRPNHead)
            objectness.append(self.rpn.head.cls_logits(f).flatten())
            pooled = F.adaptive_avg_pool2d(feats[q], size)
            class_logits.append(self.roi_heads.box_predictor.classify(self.roi_heads.box_head(pooled)))
        obj = torch.cat(objectness)
        samples = self.rpn.fg_bg_sampler.batch_size_per_image * int(num_images) + obj.numel()
        rpn = F.binary_cross_entropy_with_logits(obj, torch.ones_like(obj), reduction="sum") / samples
        cls = F.cross_entropy(torch.cat(class_logits), (aux_labels + 1).repeat(len(aux_images)))
        return {"loss_rpn_cls_auxiliary": self.aux_rpn_weight * rpn, "loss_cls_auxiliary": self.aux_roi_weight * cls}

    def forward(self, images=None, targets=None, mode=None, aux_images=None, aux_labels=None):
        """:class:`FewShotFasterRCNN`'s, plus the auxiliary losses in ``mode="train"`` when ``aux_images`` are given."""
        out = super().forward(images, targets, mode)
        if mode == "train" and aux_images is not None:
            out.update(self.auxiliary_losses(aux_images, aux_labels, num_images=len(images)))
        return out
