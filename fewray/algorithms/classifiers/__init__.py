"""Few-shot classifiers: a backbone plus a head, with mmfewshot's meta-test contract."""

from fewray.algorithms.classifiers.base_metric import BaseMetricClassifier
from fewray.algorithms.classifiers.protonet import ProtoNet

__all__ = ["BaseMetricClassifier", "ProtoNet"]
