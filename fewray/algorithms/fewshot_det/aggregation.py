"""Aggregators of query and support features: how the meta-learning detectors condition a query on a class.

mmfewshot's names (``mmfewshot/detection/models/utils/aggregation_layer.py``), here on tensors of any trailing
shape: query features ``(N, C, ...)`` against one support feature ``(1, C, ...)``:

===================================  ==================================================================
``DotProductAggregator``             ``q * s`` (Meta R-CNN's channel attention; FSDetView's first branch)
``DifferenceAggregator``             ``q - s`` (FSDetView's second branch)
``DepthWiseCorrelationAggregator``   depth-wise cross-correlation of a query map by a support kernel
                                     (Attention-RPN, https://arxiv.org/abs/1908.01998)
===================================  ==================================================================

With ``with_fc`` an aggregator maps its ``(N, C)`` result through ``Linear -> BatchNorm1d -> ReLU`` to
``out_channels`` (FSDetView). :class:`AggregationLayer` runs a list of them and returns their outputs in order.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fewray.core.errors import ConfigError
from fewray.core.registry import Registry

#: ``type:`` of an aggregator config -> class
AGGREGATORS = Registry("aggregator")


class _Aggregator(nn.Module):
    def __init__(self, in_channels: int | None = None, out_channels: int | None = None, with_fc: bool = False) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.with_fc = in_channels, out_channels, bool(with_fc)
        if with_fc:
            if in_channels is None or out_channels is None:
                raise ConfigError(f"{type(self).__name__}: with_fc needs in_channels and out_channels")
            self.fc = nn.Linear(in_channels, out_channels)
            self.norm = nn.BatchNorm1d(out_channels)

    def combine(self, query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        """Aggregated features (class docstring); ``(N, out_channels)`` with ``with_fc``."""
        if query.shape[1] != support.shape[1]:
            raise ValueError(f"{type(self).__name__}: query has {query.shape[1]} channels, support {support.shape[1]}")
        if support.shape[0] != 1:
            raise ValueError(f"{type(self).__name__}: one support feature at a time, got {support.shape[0]}")
        out = self.combine(query, support)
        if self.with_fc:
            out = F.relu(self.norm(self.fc(out.flatten(1))))
        return out


@AGGREGATORS.register()
class DotProductAggregator(_Aggregator):
    """``q * s`` (broadcast over the query batch): Meta R-CNN's class-attentive re-weighting of RoI features
    (Yan et al., ICCV 2019, https://arxiv.org/abs/1909.13032).

    Args:
        in_channels, out_channels (int | None): for ``with_fc``. with_fc (bool): ``Linear -> BatchNorm1d -> ReLU``.

    Shapes: query ``(N, C, ...)``, support ``(1, C, ...)`` -> ``(N, C, ...)`` (``(N, out_channels)`` with_fc).

    Example::

        >>> DotProductAggregator()(torch.tensor([[1., 2.], [3., 4.]]), torch.tensor([[10., 0.5]])).tolist()
        [[10.0, 1.0], [30.0, 2.0]]
    """

    def combine(self, query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        return query * support


@AGGREGATORS.register()
class DifferenceAggregator(_Aggregator):
    """``q - s``: FSDetView's difference branch (Xiao and Marlet, ECCV 2020, https://arxiv.org/abs/2007.12107).

    Shapes and arguments as :class:`DotProductAggregator`.

    Example::

        >>> DifferenceAggregator()(torch.tensor([[1., 2.], [3., 4.]]), torch.tensor([[1., 1.]])).tolist()
        [[0.0, 1.0], [2.0, 3.0]]
    """

    def combine(self, query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        return query - support


@AGGREGATORS.register()
class DepthWiseCorrelationAggregator(_Aggregator):
    """Depth-wise cross-correlation: each channel of the query map convolved with the same channel of the support
    kernel (Attention-RPN's attention, Fan et al., CVPR 2020, https://arxiv.org/abs/1908.01998; with a 1x1
    support kernel, channel-wise scaling).

    Shapes: query ``(N, C, H, W)``, support ``(1, C, h, w)`` -> ``(N, C, H - h + 1, W - w + 1)``.

    Example::

        >>> q = torch.arange(8.).view(1, 2, 2, 2)
        >>> DepthWiseCorrelationAggregator(in_channels=2)(q, torch.tensor([[[[1.]], [[2.]]]])).flatten().tolist()
        [0.0, 1.0, 2.0, 3.0, 8.0, 10.0, 12.0, 14.0]
        >>> DepthWiseCorrelationAggregator(in_channels=2)(q, torch.ones(1, 2, 2, 2)).flatten().tolist()
        [6.0, 22.0]
    """

    def combine(self, query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        return F.conv2d(query, support.permute(1, 0, 2, 3), groups=query.shape[1])


class AggregationLayer(nn.Module):
    """Several aggregators of the same query and support, outputs in order (mmfewshot's ``AggregationLayer``).

    Args:
        aggregator_cfgs (list[dict]): ``{type: DotProductAggregator, in_channels, out_channels, with_fc}`` ...

    Raises:
        ConfigError: an empty list, an unknown type or argument (naming it).

    Example::

        >>> layer = AggregationLayer([{"type": "DotProductAggregator"}, {"type": "DifferenceAggregator"}])
        >>> [t.tolist() for t in layer(torch.tensor([[2., 3.]]), torch.tensor([[1., 2.]]))]
        [[[2.0, 6.0]], [[1.0, 1.0]]]
    """

    def __init__(self, aggregator_cfgs: list[dict[str, Any]]) -> None:
        super().__init__()
        if not aggregator_cfgs:
            raise ConfigError("model.aggregation_layer: give at least one aggregator "
                              f"({', '.join(AGGREGATORS.list())})")
        self.aggregators = nn.ModuleList(AGGREGATORS.build(dict(c), "model.aggregation_layer")
                                         for c in aggregator_cfgs)

    def forward(self, query: torch.Tensor, support: torch.Tensor) -> list[torch.Tensor]:
        """Each aggregator's output."""
        return [agg(query, support) for agg in self.aggregators]
