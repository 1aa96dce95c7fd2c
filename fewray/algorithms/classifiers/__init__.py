"""Few-shot classifiers: a backbone plus a head, with mmfewshot's meta-test contract; and mmpretrain's
``ImageClassifier`` (whole-image classification: the multi-label classifier)."""

from fewray.algorithms.classifiers.arcface_baseline import ArcFaceBaseline
from fewray.algorithms.classifiers.base_finetune import BaseFinetuneClassifier, finetune_head
from fewray.algorithms.classifiers.base_metric import BaseMetricClassifier
from fewray.algorithms.classifiers.baseline import Baseline
from fewray.algorithms.classifiers.baseline_pp import BaselinePP
from fewray.algorithms.classifiers.image_classifier import ImageClassifier
from fewray.algorithms.classifiers.maml import MAML
from fewray.algorithms.classifiers.matching_net import MatchingNet
from fewray.algorithms.classifiers.meta_baseline import MetaBaseline
from fewray.algorithms.classifiers.neg_margin import NegMargin
from fewray.algorithms.classifiers.protonet import ProtoNet
from fewray.algorithms.classifiers.relation_net import RelationNet

__all__ = [
    "MAML",
    "ArcFaceBaseline",
    "BaseFinetuneClassifier",
    "BaseMetricClassifier",
    "Baseline",
    "BaselinePP",
    "ImageClassifier",
    "MatchingNet",
    "MetaBaseline",
    "NegMargin",
    "ProtoNet",
    "RelationNet",
    "finetune_head",
]
