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

        >>> model = build_classifier({"type": "RelationNet",
        ...     "backbone": {"type": "Conv4NoPool", "in_channels": 1},
        ...     "head": {"type": "RelationHead", "in_channels": 64, "feature_size": [5, 5]}})
    """
