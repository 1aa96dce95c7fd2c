"""Few-shot object detectors on torchvision's parts (no mmcv / mmdet): Faster R-CNN with an FPN, TFA, FSCE, MPSR, and the
query-support detectors Meta R-CNN, FSDetView and Attention-RPN.

Importing registers ``FasterRCNN``, ``TFA``, ``FSCE``, ``MPSR``, ``MetaRCNN``, ``FSDetView`` and ``AttentionRPNDetector`` in :data:`fewray.algorithms.builder.DETECTORS`, the bbox
heads in :data:`~fewray.algorithms.fewshot_det.bbox_heads.BBOX_HEADS` and ``ContrastiveLossDecayHook`` in
:data:`~fewray.algorithms.builder.HOOKS`.
"""

from fewray.algorithms.fewshot_det.bbox_heads import (BBOX_HEADS, ContrastiveBBoxHead, CosineSimBBoxHead,
                                                      Shared2FCBBoxHead)
from fewray.algorithms.fewshot_det.faster_rcnn import FSCE, TFA, FewShotFasterRCNN, load_detector_checkpoint
from fewray.algorithms.fewshot_det.fpn_backbone import FPNBackbone
from fewray.algorithms.fewshot_det.hooks import ContrastiveLossDecayHook
from fewray.algorithms.fewshot_det.aggregation import (AGGREGATORS, AggregationLayer, DepthWiseCorrelationAggregator,
                                                       DifferenceAggregator, DotProductAggregator)
from fewray.algorithms.fewshot_det.attention_rpn import (AttentionRPNDetector, AttentionRPNHead,
                                                         MultiRelationBBoxHead, MultiRelationRoIHead)
from fewray.algorithms.fewshot_det.meta_conv import MetaConv
from fewray.algorithms.fewshot_det.mpsr import MPSR
from fewray.algorithms.fewshot_det.meta_rcnn import FSDetView, FSDetViewRoIHead, MetaRCNN, MetaRCNNRoIHead
from fewray.algorithms.fewshot_det.query_support import QuerySupportDetector
from fewray.algorithms.fewshot_det.roi_heads import ContrastiveRoIHead
from fewray.algorithms.fewshot_det.surgery import apply_surgery, surgery_name

__all__ = ["MPSR", "AttentionRPNDetector", "AttentionRPNHead", "MultiRelationBBoxHead", "MultiRelationRoIHead", "AGGREGATORS", "AggregationLayer", "DepthWiseCorrelationAggregator", "DifferenceAggregator",
           "DotProductAggregator", "FSDetView", "FSDetViewRoIHead", "MetaConv", "MetaRCNN", "MetaRCNNRoIHead",
           "QuerySupportDetector", "BBOX_HEADS", "ContrastiveBBoxHead", "ContrastiveLossDecayHook", "ContrastiveRoIHead", "CosineSimBBoxHead",
           "FPNBackbone", "FSCE", "FewShotFasterRCNN", "Shared2FCBBoxHead", "TFA", "apply_surgery",
           "load_detector_checkpoint", "surgery_name"]
