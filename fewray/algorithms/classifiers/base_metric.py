"""BaseMetricClassifier: backbone + metric head, trained on episodes, meta-tested on frozen features."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class BaseMetricClassifier(nn.Module):
    """A metric-based few-shot classifier (mmfewshot's BaseMetricClassifier).

    Args:
        backbone (nn.Module): maps images ``(N, C, H, W)`` to features ``(N, D)``.
        head (nn.Module): a metric head with ``forward_train`` and the support/query protocol
            (e.g. :class:`~fewray.algorithms.heads.PrototypeHead`).

    ``forward(mode=...)``:
        - ``'train'``: ``support_img (N*K, C, H, W)``, ``support_label (N*K,)``, ``query_img``,
          ``query_label`` -> ``{"loss", "accuracy"}``; one backbone pass over support and query. With a leading
          task dimension (``support_img (T, N*K, C, H, W)``, ...: a meta-batch) the means over the ``T`` episodes
          (:meth:`forward_train_tasks`).
        - ``'extract'``: ``img`` -> features ``(N, D)``.
        - ``'support'``: ``img`` or ``feats`` with ``label`` -> stores the support set.
        - ``'query'``: ``img`` or ``feats`` -> scores ``(Q, N)``.

    Meta-test calls, per task: :meth:`before_meta_test` once, then :meth:`before_forward_support`,
    ``forward(mode='support')``, :meth:`before_forward_query`, ``forward(mode='query')``.
    Metric methods keep the backbone frozen, so meta-test can pass precomputed ``feats``
    (mmfewshot's fast_test).
    """

    #: the backbone is frozen at meta-test, so features of a split can be computed once
    frozen_backbone_at_test = True
    #: False: meta-trained on episodes; True: pre-trained on plain labelled batches (fine-tune methods)
    train_on_batches = False

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def extract_feat(self, img: torch.Tensor) -> torch.Tensor:
        """Backbone features ``(N, D)`` of images ``(N, C, H, W)``."""
        return self.backbone(img)

    def forward(self, mode: str = "train", **kwargs: Any) -> Any:
        """Dispatch on ``mode`` (see the class docstring)."""
        if mode == "train":
            if kwargs.get("support_img") is not None and kwargs["support_img"].dim() == 5:
                return self.forward_train_tasks(**kwargs)
            return self.forward_train(**kwargs)
        if mode == "extract":
            return self.extract_feat(kwargs["img"])
        if mode == "support":
            return self.forward_support(**kwargs)
        if mode == "query":
            return self.forward_query(**kwargs)
        raise ValueError(f"unknown forward mode '{mode}' (train, extract, support, query)")

    def forward_train(
        self,
        support_img: torch.Tensor,
        support_label: torch.Tensor,
        query_img: torch.Tensor,
        query_label: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Loss and accuracy of one episode; support and query share one backbone pass."""
        feats = self.extract_feat(torch.cat([support_img, query_img]))
        n_support = support_img.shape[0]
        return self.head.forward_train(feats[:n_support], support_label, feats[n_support:], query_label)

    def forward_train_tasks(
        self, support_img: torch.Tensor, support_label: torch.Tensor, query_img: torch.Tensor,
        query_label: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """A meta-batch of ``T`` episodes (``support_img (T, M, C, H, W)``, labels ``(T, M)``, ``query_img
        (T, Q, C, H, W)``, ``(T, Q)``): each output (loss, accuracy) is the mean over the episodes of
        :meth:`forward_train`'s. (MAML computes its meta-batches itself, looped or vectorised.)"""
        outs = [self.forward_train(s, sl, q, ql) for s, sl, q, ql in zip(support_img, support_label, query_img,
                                                                         query_label)]
        return {k: torch.stack([o[k] for o in outs]).mean() for k in outs[0]}

    def before_meta_test(self, meta_test_cfg: Any = None) -> None:
        """Prepare for meta-test: evaluation mode (frozen batch-norm statistics)."""
        self.eval()

    def forward_tasks(
        self, support_feats: torch.Tensor, support_labels: torch.Tensor, query_feats: torch.Tensor, num_classes: int
    ) -> torch.Tensor:
        """Scores ``(T, Q, N)`` of ``T`` tasks given as features (frozen backbone).

        Uses the head's batched ``forward_tasks`` when it has one (all tasks in one computation), else
        runs the per-task support/query protocol task by task; both give the same scores. A classifier
        with ``frozen_backbone_at_test = False`` (MAML) gets images ``(T, M, C, H, W)`` instead of features.

        Args:
            support_feats: ``(T, N*K, D)``; support_labels: ``(T, N*K)`` in ``0..N-1``;
            query_feats: ``(T, Q, D)``; num_classes: N.
        """
        if self.frozen_backbone_at_test and hasattr(self.head, "forward_tasks"):
            return self.head.forward_tasks(support_feats, support_labels, query_feats, num_classes)
        key = "feats" if self.frozen_backbone_at_test else "img"  # a model adapting its backbone gets images
        scores = []
        for sf, sl, qf in zip(support_feats, support_labels, query_feats):
            self.before_forward_support()
            self.forward_support(label=sl, **{key: sf})
            self.before_forward_query()
            scores.append(self.forward_query(**{key: qf}))
        return torch.stack(scores)

    def before_forward_support(self) -> None:
        """Start a new task: forget the previous support set."""
        self.head.before_forward_support()

    def forward_support(self, label: torch.Tensor, img: torch.Tensor | None = None, feats: torch.Tensor | None = None):
        """Store a support batch: images ``(M, C, H, W)`` or features ``(M, D)``, labels ``(M,)`` in ``0..N-1``."""
        if feats is None:
            feats = self.extract_feat(img)
        self.head.forward_support(feats, label)

    def before_forward_query(self) -> None:
        """Finish the support set (e.g. compute prototypes)."""
        self.head.before_forward_query()

    def forward_query(self, img: torch.Tensor | None = None, feats: torch.Tensor | None = None) -> torch.Tensor:
        """Scores ``(Q, N)`` of a query batch of images ``(Q, C, H, W)`` or features ``(Q, D)``."""
        if feats is None:
            feats = self.extract_feat(img)
        return self.head.forward_query(feats)
