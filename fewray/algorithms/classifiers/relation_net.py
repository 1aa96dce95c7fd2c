"""RelationNet: Learning to Compare: Relation Network for Few-Shot Learning (Sung et al., CVPR 2018)."""

from __future__ import annotations

from fewray.algorithms.builder import CLASSIFIERS
from fewray.algorithms.classifiers.base_metric import BaseMetricClassifier


@CLASSIFIERS.register
class RelationNet(BaseMetricClassifier):
    """Relation Networks: an embedding that keeps spatial maps plus :class:`~fewray.algorithms.heads.RelationHead`.

    The backbone must output ``(N, C, h, w)`` maps (``Conv4NoPool``, or any backbone with ``flatten=False``);
    the head's ``in_channels`` / ``feature_size`` must match them. Features passed to ``forward_tasks`` and
    ``forward(mode='support'|'query', feats=...)`` are those maps.

    Args:
        backbone (nn.Module): ``(N, C, H, W) -> (N, C', h, w)``.
        head (nn.Module): normally ``RelationHead``.

    Example::

        >>> import torch
        >>> from fewray.algorithms import build_classifier
        >>> model = build_classifier({"type": "RelationNet",
        ...     "backbone": {"type": "Conv4NoPool", "in_channels": 1},
        ...     "head": {"type": "RelationHead", "in_channels": 64, "feature_size": [5, 5]}})
        >>> model(mode="extract", img=torch.rand(2, 1, 28, 28)).shape   # maps, not vectors
        torch.Size([2, 64, 5, 5])
        >>> out = model(mode="train", support_img=torch.rand(5, 1, 28, 28), support_label=torch.arange(5),
        ...             query_img=torch.rand(5, 1, 28, 28), query_label=torch.arange(5))
        >>> sorted(out)
        ['accuracy', 'loss']
    """
