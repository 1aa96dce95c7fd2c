"""Few-shot heads: turn support and query features into losses (training) and scores (meta-test)."""

from fewray.algorithms.heads.base_finetune_head import BaseFinetuneHead
from fewray.algorithms.heads.cosine_distance_head import CosineDistanceHead
from fewray.algorithms.heads.linear_head import LinearHead
from fewray.algorithms.heads.matching_head import MatchingHead
from fewray.algorithms.heads.meta_baseline_head import MetaBaselineHead
from fewray.algorithms.heads.neg_margin_head import NegMarginHead
from fewray.algorithms.heads.prototype_head import PrototypeHead
from fewray.algorithms.heads.relation_head import RelationHead

__all__ = [
    "BaseFinetuneHead", "CosineDistanceHead", "LinearHead", "MatchingHead", "MetaBaselineHead", "NegMarginHead",
    "PrototypeHead", "RelationHead",
]
