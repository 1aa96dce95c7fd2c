"""MAML: Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks (Finn et al., ICML 2017)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fewray.algorithms.builder import CLASSIFIERS
from fewray.algorithms.classifiers.base_metric import BaseMetricClassifier
from fewray.algorithms.heads.utils import accuracy
from fewray.algorithms.utils.fast_weights import (
    Params,
    adapt,
    batch_norm_batch_stats,
    functional_forward,
    trainable_params,
)


@CLASSIFIERS.register
class MAML(BaseMetricClassifier):
    """MAML: learn an initialisation from which a few SGD steps on a task's support set classify its queries.

    From "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks" (Finn, Abbeel and Levine, ICML
    2017). The whole network (backbone + head, e.g. ``Conv4`` + ``LinearHead(num_classes=N)``) is adapted:
    the inner loop takes ``num_inner_steps`` SGD steps of the support cross-entropy on fast weights
    (:func:`torch.func.functional_call`, so any backbone works); the outer loss is the query cross-entropy
    with the adapted weights, differentiated through the inner loop (second order) or not (``first_order``,
    FOMAML). The model's own parameters are never modified by adaptation.

    BatchNorm: every forward (inner steps, query, meta-test) normalises with the current batch's statistics,
    as in the paper (transductive: at meta-test the query batch's statistics are used); running statistics
    are never updated or used.

    ``frozen_backbone_at_test = False``: meta-test needs images. Per task: :meth:`before_forward_support`,
    ``forward(mode='support', img=(M, C, H, W), label=(M,))`` adapts from the meta-learned weights on all the
    support images given so far, ``forward(mode='query', img=(Q, C, H, W))`` returns ``(Q, N)`` logits of the
    adapted network. :meth:`forward_tasks` does that for ``T`` tasks given as images. Gradients are enabled
    inside, so a caller's ``torch.no_grad()`` is fine.

    Args:
        backbone (nn.Module): ``(N, C, H, W) -> (N, D)``.
        head (nn.Module): ``(N, D) -> (N, ways)`` logits, normally ``LinearHead(num_classes=ways)``.
        num_inner_steps (int): inner SGD steps in meta-training. Default 2.
        inner_lr (float): inner learning rate. Default 0.01.
        first_order (bool): FOMAML (no second-order terms). Default False.
        test_num_inner_steps (int | None): inner steps at meta-test; None: ``num_inner_steps``. Default None.
        test_inner_lr (float | None): inner learning rate at meta-test; None: ``inner_lr``. Default None.

    Raises:
        ValueError: ``forward(mode='support')`` without images, labels beyond the head's classes, or an
        unknown ``meta_test_cfg`` key; RuntimeError: query before support.

    Example::

        >>> import torch
        >>> from fewray.algorithms import build_classifier
        >>> model = build_classifier({"type": "MAML", "backbone": {"type": "Conv4", "in_channels": 1},
        ...     "head": {"type": "LinearHead", "num_classes": 5, "in_channels": 64},
        ...     "num_inner_steps": 1, "inner_lr": 0.4})
        >>> out = model(mode="train", support_img=torch.rand(5, 1, 28, 28), support_label=torch.arange(5),
        ...             query_img=torch.rand(5, 1, 28, 28), query_label=torch.arange(5))
        >>> out["loss"].backward()   # the meta-gradient reaches the initial weights through the inner step
        >>> model.backbone.layers[0][0].weight.grad.shape
        torch.Size([64, 1, 3, 3])

        Meta-test adapts on each task's support images (not features)::

        >>> model.before_meta_test({"test_num_inner_steps": 2})
        >>> model.before_forward_support()
        >>> model(mode="support", img=torch.rand(5, 1, 28, 28), label=torch.arange(5))
        >>> model(mode="query", img=torch.rand(3, 1, 28, 28)).shape
        torch.Size([3, 5])
    """

    frozen_backbone_at_test = False

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        num_inner_steps: int = 2,
        inner_lr: float = 0.01,
        first_order: bool = False,
        test_num_inner_steps: int | None = None,
        test_inner_lr: float | None = None,
    ) -> None:
        super().__init__(backbone, head)
        self.num_inner_steps, self.inner_lr, self.first_order = num_inner_steps, inner_lr, first_order
        self.test_num_inner_steps = num_inner_steps if test_num_inner_steps is None else test_num_inner_steps
        self.test_inner_lr = inner_lr if test_inner_lr is None else test_inner_lr
        self._support: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._fast: Params | None = None

    def forward(self, mode: str = "train", **kwargs: Any) -> Any:
        """As :class:`BaseMetricClassifier`, plus ``mode='logits'``: ``img`` -> ``head(backbone(img))``."""
        if mode == "logits":
            return self.head(self.backbone(kwargs["img"]))
        return super().forward(mode, **kwargs)

    def logits(self, img: torch.Tensor, params: Params | None = None) -> torch.Tensor:
        """Logits ``(B, ways)`` of ``img`` with fast weights ``params`` (None: the model's own), batch-norm on batch stats."""
        with batch_norm_batch_stats(self):
            if params is None:
                params = trainable_params(self)
            return functional_forward(self, params, mode="logits", img=img)

    def adapt(self, img: torch.Tensor, label: torch.Tensor, steps: int, lr: float, first_order: bool = True) -> Params:
        """Fast weights after ``steps`` SGD steps of the cross-entropy of ``(img, label)`` from the model's weights."""
        return adapt(lambda p: F.cross_entropy(self.logits(img, p), label), trainable_params(self), steps, lr,
                     first_order)

    def _check_labels(self, label: torch.Tensor) -> None:
        n_out = getattr(self.head, "num_classes", None)
        if n_out is not None and int(label.max()) >= n_out:
            raise ValueError(f"label {int(label.max())} is beyond the head's {n_out} classes (ways must match "
                             f"head.num_classes)")

    def forward_train(
        self, support_img: torch.Tensor, support_label: torch.Tensor, query_img: torch.Tensor,
        query_label: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Outer loss (query cross-entropy after adapting on the support set) and query accuracy of one episode."""
        self._check_labels(support_label)
        fast = self.adapt(support_img, support_label, self.num_inner_steps, self.inner_lr, self.first_order)
        logits = self.logits(query_img, fast)
        return {"loss": F.cross_entropy(logits, query_label), "accuracy": accuracy(logits, query_label)}

    # ---- meta-test -----------------------------------------------------------------------------------
    def before_meta_test(self, meta_test_cfg: dict[str, Any] | None = None) -> None:
        """Evaluation mode; ``meta_test_cfg`` may set ``test_num_inner_steps`` / ``test_inner_lr``."""
        self.eval()
        for k, v in (meta_test_cfg or {}).items():
            if k == "test_num_inner_steps":
                self.test_num_inner_steps = int(v)
            elif k == "test_inner_lr":
                self.test_inner_lr = float(v)
            else:
                raise ValueError(f"unknown meta_test_cfg key '{k}' (test_num_inner_steps, test_inner_lr)")

    def before_forward_support(self) -> None:
        """Start a new task: forget the support set and the fast weights."""
        self._support, self._fast = [], None

    def forward_support(self, label: torch.Tensor, img: torch.Tensor | None = None,
                        feats: torch.Tensor | None = None) -> None:
        """Adapt to the support images given so far (``img`` ``(M, C, H, W)``, ``label`` ``(M,)``)."""
        if img is None:
            raise ValueError("MAML adapts the whole network: forward(mode='support') needs img, not feats")
        self._check_labels(label)
        self._support.append((img, label))
        imgs = torch.cat([i for i, _ in self._support])
        labels = torch.cat([lab for _, lab in self._support])
        with torch.enable_grad():
            fast = self.adapt(imgs, labels, self.test_num_inner_steps, self.test_inner_lr, first_order=True)
        self._fast = {k: v.detach() for k, v in fast.items()}

    def before_forward_query(self) -> None:
        """Nothing to do: the fast weights were computed in :meth:`forward_support`."""

    def forward_query(self, img: torch.Tensor | None = None, feats: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(Q, N)`` of query images with the adapted weights (batch statistics of the query batch)."""
        if self._fast is None:
            raise RuntimeError("call forward(mode='support') before forward(mode='query')")
        if img is None:
            raise ValueError("MAML scores images: forward(mode='query') needs img, not feats")
        with torch.no_grad():
            return self.logits(img, self._fast)
