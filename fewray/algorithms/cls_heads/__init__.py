"""mmpretrain's classification heads (multi-label, ArcFace): registered in :data:`fewray.algorithms.HEADS`."""

from fewray.algorithms.cls_heads.arcface_cls_head import ArcFaceClsHead, adaptive_margins, read_margins_file
from fewray.algorithms.cls_heads.multi_label_cls_head import MultiLabelClsHead, MultiLabelLinearClsHead

__all__ = ["ArcFaceClsHead", "MultiLabelClsHead", "MultiLabelLinearClsHead", "adaptive_margins", "read_margins_file"]
