"""mmfewshot's per-task meta-test protocol for metric heads, written once.

Per task: ``before_forward_support()`` forgets the previous task, ``forward_support(feats, labels)`` stores
support features (it may be called several times), ``before_forward_query()`` turns the stored support set
into the task's state (prototypes, class-mean maps, the support set itself) and ``forward_query(feats)``
scores queries against it. A head implements only :meth:`SupportSetMixin.prepare_task` and
:meth:`SupportSetMixin.score_task`.

Example::

    >>> import torch
    >>> from torch import nn
    >>> class Nearest(SupportSetMixin, nn.Module):   # scores: minus the distance to the class means
    ...     def prepare_task(self, feats, labels, num_classes):
    ...         return torch.stack([feats[labels == c].mean(0) for c in range(num_classes)])
    ...     def score_task(self, means, feats):
    ...         return -torch.cdist(feats, means)
    >>> head = Nearest()
    >>> head.before_forward_support()
    >>> head.forward_support(torch.tensor([[0.0], [10.0]]), torch.tensor([0, 1]))
    >>> head.before_forward_query()
    >>> head.forward_query(torch.tensor([[9.0]])).argmax(-1)
    tensor([1])
"""

from __future__ import annotations

from typing import Any

import torch


class SupportSetMixin:
    """The support-set state machine of a metric head (mixed into an ``nn.Module``).

    Attributes:
        flatten_support (bool): store support features flattened to ``(M, D)`` (default True); False keeps
            feature maps ``(M, C, h, w)`` (RelationNet's head).
    """

    flatten_support: bool = True

    def before_forward_support(self) -> None:
        """Forget the previous task's support set."""
        self._support_feats: list[torch.Tensor] = []
        self._support_labels: list[torch.Tensor] = []
        self._task: Any = None

    def forward_support(self, feats: torch.Tensor, labels: torch.Tensor) -> None:
        """Store support features ``(M, D)`` (or maps ``(M, C, h, w)``) and labels ``(M,)`` in ``0..N-1``."""
        if not hasattr(self, "_support_feats"):
            self.before_forward_support()
        self._support_feats.append(feats.flatten(1) if self.flatten_support else feats)
        self._support_labels.append(labels)

    def before_forward_query(self) -> None:
        """Build the task's state from the stored support set (:meth:`prepare_task`).

        Raises:
            RuntimeError: no support features were given since :meth:`before_forward_support`.
        """
        if not getattr(self, "_support_feats", None):
            raise RuntimeError("call forward_support() with the task's support set before before_forward_query()")
        labels = torch.cat(self._support_labels)
        self._task = self.prepare_task(torch.cat(self._support_feats), labels, int(labels.max()) + 1)

    def forward_query(self, feats: torch.Tensor) -> torch.Tensor:
        """Scores ``(Q, N)`` of query features ``(Q, D)`` (or maps); higher is more likely.

        Raises:
            RuntimeError: called before :meth:`before_forward_query`.
        """
        if getattr(self, "_task", None) is None:
            raise RuntimeError("call before_forward_query() after the support set")
        return self.score_task(self._task, feats.flatten(1) if self.flatten_support else feats)

    def prepare_task(self, feats: torch.Tensor, labels: torch.Tensor, num_classes: int) -> Any:
        """The task's state from its support features and labels (e.g. prototypes ``(N, D)``)."""
        raise NotImplementedError

    def score_task(self, task: Any, feats: torch.Tensor) -> torch.Tensor:
        """Scores ``(Q, N)`` of query features against the task's state."""
        raise NotImplementedError
