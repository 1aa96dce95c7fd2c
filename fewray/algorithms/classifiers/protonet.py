"""ProtoNet: Prototypical Networks for Few-shot Learning (Snell, Swersky and Zemel, NeurIPS 2017)."""

from __future__ import annotations

from fewray.algorithms.builder import CLASSIFIERS
from fewray.algorithms.classifiers.base_metric import BaseMetricClassifier


@CLASSIFIERS.register
class ProtoNet(BaseMetricClassifier):
    """Prototypical Networks: a backbone embedding plus :class:`~fewray.algorithms.heads.PrototypeHead`.

    Each class is represented by the mean of its support embeddings (its prototype); a query
    is classified by softmax over negative squared Euclidean distances to the prototypes.

    Args:
        backbone (nn.Module): e.g. :class:`~fewray.algorithms.backbones.Conv4`, ``(N, C, H, W) -> (N, D)``.
        head (nn.Module): normally ``PrototypeHead``.

    Example::

        >>> import torch
        >>> from fewray.algorithms import build_classifier
        >>> model = build_classifier({"type": "ProtoNet",
        ...     "backbone": {"type": "Conv4", "in_channels": 1}, "head": {"type": "PrototypeHead"}})
        >>> out = model(mode="train", support_img=torch.rand(10, 1, 28, 28),
        ...             support_label=torch.arange(5).repeat(2), query_img=torch.rand(5, 1, 28, 28),
        ...             query_label=torch.arange(5))
        >>> sorted(out)
        ['accuracy', 'loss']
    """
