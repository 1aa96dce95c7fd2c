"""PrototypeHead: the classifier of Prototypical Networks (Snell et al., NeurIPS 2017)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fewray.algorithms.builder import HEADS
from fewray.algorithms.heads.support_set import SupportSetMixin


def prototypes(feats: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class means of ``feats`` ``(M, D)`` grouped by ``labels`` ``(M,)`` in ``0..num_classes-1``: ``(num_classes, D)``."""
    sums = torch.zeros(num_classes, feats.shape[1], dtype=feats.dtype, device=feats.device)
    sums.index_add_(0, labels, feats)
    counts = torch.bincount(labels, minlength=num_classes).clamp_min(1).to(feats.dtype)
    return sums / counts[:, None]


def batched_prototypes(feats: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class means of many tasks at once: ``feats`` ``(T, M, D)``, ``labels`` ``(T, M)`` -> ``(T, num_classes, D)``."""
    onehot = F.one_hot(labels, num_classes).to(feats.dtype).transpose(1, 2)  # (T, N, M)
    return torch.bmm(onehot, feats) / onehot.sum(2, keepdim=True).clamp_min(1)


def neg_sq_euclidean(query: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
    """Scores ``-||q - p||^2`` of ``query`` ``(..., Q, D)`` against ``protos`` ``(..., N, D)``: ``(..., Q, N)``."""
    return -torch.cdist(query, protos).pow(2)


@HEADS.register
class PrototypeHead(SupportSetMixin, nn.Module):
    """Prototypical Networks head: class prototypes are support means, scores are negative squared distances.

    From "Prototypical Networks for Few-shot Learning" (Snell, Swersky and Zemel, NeurIPS 2017).
    Has no parameters. Training loss is cross-entropy over ``-||q - c_k||^2``
    (mmfewshot's PrototypeHead with its CrossEntropyLoss).

    Args:
        temperature (float): scores are multiplied by this (1.0 reproduces the paper). Default 1.0. With
            high-dimensional features (Conv4 at 84x84: 1600-d, squared distances of about 900 at
            initialisation) 1.0 starts with a saturated softmax and short schedules barely learn; a smaller
            scale such as 0.01 (TADAM's metric scaling, Oreshkin et al. 2018) trains from the first episodes
            (``benchmarks/protonet_temperature.py``).

    Meta-test protocol (mmfewshot): :meth:`before_forward_support` clears state,
    :meth:`forward_support` accumulates support features ``(M, D)`` with labels ``(M,)``,
    :meth:`before_forward_query` computes prototypes, :meth:`forward_query` returns ``(Q, N)`` scores.
    """

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = temperature
        self._protos: torch.Tensor | None = None

    def forward_train(
        self,
        support_feats: torch.Tensor,
        support_labels: torch.Tensor,
        query_feats: torch.Tensor,
        query_labels: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Episode loss and accuracy.

        Args:
            support_feats: ``(N*K, D)``; support_labels: ``(N*K,)`` in ``0..N-1``;
            query_feats: ``(N*Q, D)``; query_labels: ``(N*Q,)``.

        Returns:
            ``{"loss": scalar, "accuracy": scalar in [0, 1]}``.
        """
        n = int(support_labels.max()) + 1
        scores = self.temperature * neg_sq_euclidean(query_feats, prototypes(support_feats, support_labels, n))
        loss = F.cross_entropy(scores, query_labels)
        acc = (scores.argmax(1) == query_labels).float().mean()
        return {"loss": loss, "accuracy": acc.detach()}

    def forward_tasks(
        self, support_feats: torch.Tensor, support_labels: torch.Tensor, query_feats: torch.Tensor, num_classes: int
    ) -> torch.Tensor:
        """Scores of many tasks in one batched computation (same numbers as the per-task protocol).

        Args:
            support_feats: ``(T, N*K, D)``; support_labels: ``(T, N*K)`` in ``0..N-1``;
            query_feats: ``(T, Q, D)``; num_classes: N.

        Returns:
            ``(T, Q, N)`` scores.
        """
        protos = batched_prototypes(support_feats, support_labels, num_classes)
        return self.temperature * neg_sq_euclidean(query_feats, protos)

    def prepare_task(self, feats: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
        """The prototypes ``(N, D)`` of the task's support set."""
        return prototypes(feats, labels, num_classes)

    def score_task(self, protos: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """Scores ``(Q, N)`` of query features ``(Q, D)``; higher is more likely."""
        return self.temperature * neg_sq_euclidean(feats, protos)
