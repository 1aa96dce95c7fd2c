"""MetaBaselineHead: cosine similarity to prototypes with a learnable temperature (Chen et al., ICCV 2021)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fewray.algorithms.builder import HEADS
from fewray.algorithms.heads.prototype_head import batched_prototypes, prototypes
from fewray.algorithms.heads.utils import accuracy, cosine_scores
from fewray.algorithms.heads.support_set import SupportSetMixin


@HEADS.register
class MetaBaselineHead(SupportSetMixin, nn.Module):
    """Meta-Baseline head: scores are ``temperature * cos(q, c_k)`` with class prototypes ``c_k`` (support means).

    From "Meta-Baseline: Exploring Simple Meta-Learning for Few-Shot Learning" (Chen, Liu, Xu, Darrell and
    Wang, ICCV 2021). The temperature is a learnable scalar (initial 10, as the paper and mmfewshot).
    Training loss: cross-entropy over the scores.

    Args:
        temperature (float): initial scale of the cosine scores. Default 10.0.
        learnable_temperature (bool): make the temperature a parameter. Default True.

    Meta-test protocol as :class:`~fewray.algorithms.heads.PrototypeHead`; ``forward_query`` returns ``(Q, N)``.

    Raises:
        RuntimeError: ``forward_query`` before ``before_forward_query``.

    Example::

        >>> head = MetaBaselineHead()
        >>> head.forward_tasks(torch.randn(2, 10, 8), torch.arange(5).repeat(2, 2), torch.randn(2, 3, 8), 5).shape
        torch.Size([2, 3, 5])
    """

    def __init__(self, temperature: float = 10.0, learnable_temperature: bool = True) -> None:
        super().__init__()
        t = torch.tensor(float(temperature))
        if learnable_temperature:
            self.temperature = nn.Parameter(t)
        else:
            self.register_buffer("temperature", t)
        self.before_forward_support()

    def forward_train(
        self, support_feats: torch.Tensor, support_labels: torch.Tensor, query_feats: torch.Tensor,
        query_labels: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Episode loss and accuracy; support ``(N*K, D)`` labels in ``0..N-1``, query ``(Q, D)``, ``(Q,)``."""
        n = int(support_labels.max()) + 1
        protos = prototypes(support_feats.flatten(1), support_labels, n)
        scores = self.temperature * cosine_scores(query_feats.flatten(1), protos)
        return {"loss": F.cross_entropy(scores, query_labels), "accuracy": accuracy(scores, query_labels)}

    def forward_tasks(
        self, support_feats: torch.Tensor, support_labels: torch.Tensor, query_feats: torch.Tensor, num_classes: int
    ) -> torch.Tensor:
        """Scores ``(T, Q, N)`` of ``T`` tasks at once: ``(T, N*K, D)``, ``(T, N*K)``, ``(T, Q, D)``."""
        protos = batched_prototypes(support_feats.flatten(2), support_labels, num_classes)
        return self.temperature * cosine_scores(query_feats.flatten(2), protos)

    def prepare_task(self, feats: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
        """The prototypes ``(N, D)`` of the task's support set."""
        return prototypes(feats, labels, num_classes)

    def score_task(self, protos: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """Scores ``(Q, N)`` of query features ``(Q, D)``."""
        return self.temperature * cosine_scores(feats, protos)
