"""RelationHead: the learned relation module of Relation Networks (Sung et al., CVPR 2018)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fewray.algorithms.builder import HEADS
from fewray.algorithms.heads.prototype_head import batched_prototypes
from fewray.algorithms.heads.utils import accuracy, build_loss
from fewray.algorithms.heads.support_set import SupportSetMixin


@HEADS.register
class RelationHead(SupportSetMixin, nn.Module):
    """Relation Network head: a small CNN scores each (query map, class map) pair concatenated on channels.

    From "Learning to Compare: Relation Network for Few-Shot Learning" (Sung, Yang, Zhang, Xiang, Torr and
    Hospedales, CVPR 2018). Each class is represented by the mean of its support feature maps (mmfewshot;
    the paper sums them, which only rescales K-shot inputs). The relation module is
    ``2 x [conv3x3(2C->C | C->C) -> BN -> ReLU -> MaxPool2d(2)] -> fc(C*h'*w' -> hidden) -> ReLU -> fc(hidden -> 1)``.
    It needs a backbone that keeps the spatial map (``flatten=False``, e.g. ``Conv4NoPool``).

    Args:
        in_channels (int): channels ``C`` of the backbone map. Default 64.
        feature_size (list[int]): ``[h, w]`` of the backbone map (Conv4NoPool: 19x19 at 84x84, 5x5 at 28x28).
            Default ``[19, 19]``.
        hidden_channels (int): width of the hidden fc layer. Default 8.
        padding (int | None): padding of the relation convs; None: 1 if both sides < 10 else 0 (mmfewshot).
        loss (dict | None): ``{type: 'CrossEntropyLoss'}`` (default; softmax over the N relation scores) or
            ``{type: 'MSELoss'}`` (the paper: sigmoid scores regressed to the one-hot match).

    Shapes:
        support ``(N*K, C, h, w)``, query ``(Q, C, h, w)`` -> scores ``(Q, N)``.

    Raises:
        ValueError: a loss other than CrossEntropyLoss / MSELoss, or a ``feature_size`` too small for the
            two conv+pool blocks; ``forward_query`` before ``before_forward_query`` raises RuntimeError.

    Example::

        >>> head = RelationHead(in_channels=64, feature_size=[5, 5])
        >>> out = head.forward_train(torch.randn(10, 64, 5, 5), torch.arange(5).repeat(2),
        ...                          torch.randn(5, 64, 5, 5), torch.arange(5))
    """

    #: pairs per relation-module pass in :meth:`forward_tasks` (bounds memory)
    max_pairs = 1024

    flatten_support = False  # the relation module compares feature maps (M, C, h, w)

    def __init__(
        self,
        in_channels: int = 64,
        feature_size: list[int] = (19, 19),
        hidden_channels: int = 8,
        padding: int | None = None,
        loss: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        h, w = feature_size
        pad = (1 if h < 10 and w < 10 else 0) if padding is None else padding

        def shrink(s: int) -> int:
            return ((s - 2 + 2 * pad) // 2 - 2 + 2 * pad) // 2

        if shrink(h) < 1 or shrink(w) < 1:
            raise ValueError(f"feature_size {list(feature_size)} is too small for the relation module (padding {pad})")
        c = in_channels
        self.layer1 = nn.Sequential(nn.Conv2d(2 * c, c, 3, padding=pad), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2))
        self.layer2 = nn.Sequential(nn.Conv2d(c, c, 3, padding=pad), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2))
        self.fc1 = nn.Linear(c * shrink(h) * shrink(w), hidden_channels)
        self.fc2 = nn.Linear(hidden_channels, 1)
        self.loss = build_loss(loss, "CrossEntropyLoss")
        self.loss_type = type(self.loss).__name__
        if self.loss_type not in ("CrossEntropyLoss", "MSELoss"):
            raise ValueError(f"RelationHead supports CrossEntropyLoss and MSELoss, got {self.loss_type}")
        for m in self.modules():  # the paper's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.ones_(m.bias)
        self.before_forward_support()

    def relation(self, pairs: torch.Tensor) -> torch.Tensor:
        """Relation scores ``(P,)`` of concatenated pairs ``(P, 2C, h, w)``."""
        x = self.layer2(self.layer1(pairs))
        return self.fc2(F.relu(self.fc1(x.flatten(1)))).squeeze(1)

    def pair_scores(self, query: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
        """Scores ``(..., Q, N)`` of query maps ``(..., Q, C, h, w)`` against class maps ``(..., N, C, h, w)``."""
        q, n = query.shape[-4], protos.shape[-4]
        lead = query.shape[:-4]
        qe = query.unsqueeze(-4).expand(*lead, q, n, *query.shape[-3:])
        pe = protos.unsqueeze(-5).expand(*lead, q, n, *protos.shape[-3:])
        pairs = torch.cat([qe, pe], dim=-3).reshape(-1, 2 * query.shape[-3], *query.shape[-2:])
        scores = torch.cat([self.relation(p) for p in pairs.split(self.max_pairs)])
        return scores.view(*lead, q, n)

    @staticmethod
    def _protos(feats: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
        """Class-mean maps ``(T, N, C, h, w)`` of ``(T, M, C, h, w)`` features."""
        t, m = feats.shape[:2]
        return batched_prototypes(feats.reshape(t, m, -1), labels, num_classes).view(t, num_classes, *feats.shape[2:])

    def forward_train(
        self, support_feats: torch.Tensor, support_labels: torch.Tensor, query_feats: torch.Tensor,
        query_labels: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Episode loss and accuracy; support ``(N*K, C, h, w)``, labels in ``0..N-1``; query ``(Q, C, h, w)``."""
        n = int(support_labels.max()) + 1
        protos = self._protos(support_feats[None], support_labels[None], n)[0]
        scores = self.pair_scores(query_feats, protos)
        if self.loss_type == "MSELoss":
            loss = self.loss(torch.sigmoid(scores), F.one_hot(query_labels, n).to(scores.dtype))
        else:
            loss = self.loss(scores, query_labels)
        return {"loss": loss, "accuracy": accuracy(scores, query_labels)}

    def forward_tasks(
        self, support_feats: torch.Tensor, support_labels: torch.Tensor, query_feats: torch.Tensor, num_classes: int
    ) -> torch.Tensor:
        """Scores ``(T, Q, N)`` of ``T`` tasks: ``(T, N*K, C, h, w)``, ``(T, N*K)``, ``(T, Q, C, h, w)``.

        Equal to the per-task protocol in eval mode (batch-norm running statistics).
        """
        return self.pair_scores(query_feats, self._protos(support_feats, support_labels, num_classes))

    def prepare_task(self, feats: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
        """The class-mean support maps ``(N, C, h, w)``."""
        return self._protos(feats[None], labels[None], num_classes)[0]

    def score_task(self, protos: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """Relation scores ``(Q, N)`` of query maps ``(Q, C, h, w)``."""
        return self.pair_scores(feats, protos)
