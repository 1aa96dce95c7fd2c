"""MatchingHead: the classifier of Matching Networks (Vinyals et al., NeurIPS 2016), without FCE."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fewray.algorithms.builder import HEADS
from fewray.algorithms.heads.utils import accuracy, build_loss, cosine_scores
from fewray.algorithms.heads.support_set import SupportSetMixin


def matching_log_probs(
    query: torch.Tensor, support: torch.Tensor, support_labels: torch.Tensor, num_classes: int, temperature: float
) -> torch.Tensor:
    """Log of the attention-weighted label distribution ``log sum_i a(q, x_i) y_i``.

    ``a(q, x_i) = softmax_i(temperature * cos(q, x_i))`` over the support set.

    Args:
        query: ``(..., Q, D)``; support: ``(..., M, D)``; support_labels: ``(..., M)`` in ``0..num_classes-1``.

    Returns:
        ``(..., Q, num_classes)`` log-probabilities (each row's exponentials sum to 1).
    """
    attn = F.softmax(temperature * cosine_scores(query, support), dim=-1)  # (..., Q, M)
    onehot = F.one_hot(support_labels, num_classes).to(attn.dtype)  # (..., M, N)
    return torch.log((attn @ onehot).clamp_min(1e-12))


@HEADS.register
class MatchingHead(SupportSetMixin, nn.Module):
    """Matching Networks head: softmax attention over cosine similarities to every support embedding.

    From "Matching Networks for One Shot Learning" (Vinyals, Blundell, Lillicrap, Kavukcuoglu and Wierstra,
    NeurIPS 2016), without full context embeddings (as mmfewshot). A query's class distribution is
    ``P(y | q) = sum_i softmax_i(temperature * cos(q, x_i)) * onehot(y_i)``; the training loss is the
    negative log-likelihood of its log (:class:`~fewray.algorithms.losses.NLLLoss`). Has no parameters.

    Args:
        temperature (float): scale of the cosine similarities inside the softmax (mmfewshot: 100). Default 100.0.
        loss (dict | None): loss config, ``{type: 'NLLLoss', ...}``; default ``NLLLoss``.

    Meta-test: ``before_forward_support`` -> ``forward_support(feats (M, D), labels (M,))`` (repeatable) ->
    ``before_forward_query`` -> ``forward_query(feats (Q, D))`` returns ``(Q, N)`` log-probabilities.
    Feature maps ``(M, C, h, w)`` are flattened.

    Raises:
        RuntimeError: ``forward_query`` before ``before_forward_query``.

    Example::

        >>> head = MatchingHead()
        >>> out = head.forward_train(torch.randn(10, 64), torch.arange(5).repeat(2),
        ...                          torch.randn(5, 64), torch.arange(5))
        >>> sorted(out)
        ['accuracy', 'loss']
    """

    def __init__(self, temperature: float = 100.0, loss: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.temperature = temperature
        self.loss = build_loss(loss, "NLLLoss")
        self.before_forward_support()

    def forward_train(
        self, support_feats: torch.Tensor, support_labels: torch.Tensor, query_feats: torch.Tensor,
        query_labels: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Episode loss and accuracy; support ``(N*K, D)`` labels ``(N*K,)`` in ``0..N-1``, query ``(Q, D)``, ``(Q,)``."""
        n = int(support_labels.max()) + 1
        log_p = matching_log_probs(query_feats.flatten(1), support_feats.flatten(1), support_labels, n, self.temperature)
        return {"loss": self.loss(log_p, query_labels), "accuracy": accuracy(log_p, query_labels)}

    def forward_tasks(
        self, support_feats: torch.Tensor, support_labels: torch.Tensor, query_feats: torch.Tensor, num_classes: int
    ) -> torch.Tensor:
        """Log-probabilities ``(T, Q, N)`` of ``T`` tasks at once: ``(T, N*K, D)``, ``(T, N*K)``, ``(T, Q, D)``."""
        return matching_log_probs(query_feats.flatten(2), support_feats.flatten(2), support_labels, num_classes,
                                  self.temperature)

    def prepare_task(self, feats: torch.Tensor, labels: torch.Tensor, num_classes: int):
        """The task's support set itself: ``(feats (M, D), labels (M,), num_classes)``."""
        return feats, labels, num_classes

    def score_task(self, task, feats: torch.Tensor) -> torch.Tensor:
        """Log-probabilities ``(Q, N)`` of query features ``(Q, D)``."""
        support, labels, num_classes = task
        return matching_log_probs(feats, support, labels, num_classes, self.temperature)
