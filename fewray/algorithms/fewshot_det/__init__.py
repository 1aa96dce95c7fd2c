"""Few-shot object detectors on torchvision's parts (no mmcv / mmdet): Faster R-CNN with an FPN, TFA, FSCE.

Importing registers ``FasterRCNN``, ``TFA`` and ``FSCE`` in :data:`fewray.algorithms.builder.DETECTORS`, the bbox
heads in :data:`~fewray.algorithms.fewshot_det.bbox_heads.BBOX_HEADS` and ``ContrastiveLossDecayHook`` in
:data:`~fewray.algorithms.builder.HOOKS`.
"""

from fewray.algorithms.fewshot_det.bbox_heads import (BBOX_HEADS, ContrastiveBBoxHead, CosineSimBBoxHead,
                                                      Shared2FCBBoxHead)
from fewray.algorithms.fewshot_det.faster_rcnn import FSCE, TFA, FewShotFasterRCNN, load_detector_checkpoint
from fewray.algorithms.fewshot_det.fpn_backbone import FPNBackbone
from fewray.algorithms.fewshot_det.hooks import ContrastiveLossDecayHook
from fewray.algorithms.fewshot_det.roi_heads import ContrastiveRoIHead
from fewray.algorithms.fewshot_det.surgery import apply_surgery, surgery_name

__all__ = ["BBOX_HEADS", "ContrastiveBBoxHead", "ContrastiveLossDecayHook", "ContrastiveRoIHead", "CosineSimBBoxHead",
           "FPNBackbone", "FSCE", "FewShotFasterRCNN", "Shared2FCBBoxHead", "TFA", "apply_surgery",
           "load_detector_checkpoint", "surgery_name"]
