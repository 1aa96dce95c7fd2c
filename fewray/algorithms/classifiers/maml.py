"""MAML: Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks (Finn et al., ICML 2017)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from fewray.algorithms.builder import CLASSIFIERS
from fewray.algorithms.classifiers.base_metric import BaseMetricClassifier
from fewray.algorithms.heads.utils import accuracy
from fewray.algorithms.utils.fast_weights import Params, batch_norm_batch_stats, trainable_params
from fewray.core.errors import ConfigError

#: how the tasks of a meta-batch (training) or of a meta-test chunk are run: ``loop`` one task after the other,
#: ``vmap`` all at once under :func:`torch.func.vmap`, ``auto`` the faster one on the device (measured by
#: ``benchmarks/maml_speed.py``: the loop on CPU, vmap on CUDA)
TASK_BATCHING = ("auto", "loop", "vmap")


def resolve_task_batching(mode: str, device: torch.device | str) -> str:
    """``loop`` or ``vmap`` for ``mode`` (one of :data:`TASK_BATCHING`) on ``device``.

    ``auto`` is ``vmap`` on CUDA and ``loop`` elsewhere (on these 2-core CPUs the loop measured faster at Conv4
    28x28 size: ``benchmarks/maml_speed.py``).

    Raises:
        ConfigError: an unknown ``mode`` (a ValueError).

    Example::

        >>> resolve_task_batching("auto", "cpu"), resolve_task_batching("vmap", "cpu")
        ('loop', 'vmap')
    """
    if mode not in TASK_BATCHING:
        raise ConfigError(f"unknown task_batching '{mode}' (one of auto, loop, vmap; config key model.task_batching)")
    if mode != "auto":
        return mode
    return "vmap" if torch.device(device).type == "cuda" else "loop"


@CLASSIFIERS.register
class MAML(BaseMetricClassifier):
    """MAML: learn an initialisation from which a few SGD steps on a task's support set classify its queries.

    From "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks" (Finn, Abbeel and Levine, ICML
    2017, https://arxiv.org/abs/1703.03400). The whole network (backbone + head, e.g. ``Conv4`` +
    ``LinearHead(num_classes=N)``) is adapted: the inner loop takes ``num_inner_steps`` SGD steps of the support
    cross-entropy on fast weights (:func:`torch.func.functional_call` and :func:`torch.func.grad`, so any backbone
    works); the outer loss is the query cross-entropy with the adapted weights, differentiated through the inner
    loop (second order) or not (``first_order``, FOMAML). The model's own parameters are never modified by
    adaptation.

    Meta-batches (the paper: 32 tasks per meta-update on Omniglot 5-way, 16 on 20-way, 4 on mini-ImageNet):
    ``forward(mode='train')`` takes one episode (``support_img (M, C, H, W)``) or ``T`` episodes stacked
    (``support_img (T, M, C, H, W)``, ``support_label (T, M)``, ``query_img (T, Q, C, H, W)``, ``query_label
    (T, Q)``); the loss is the mean of the tasks' query losses (``train.meta_batch_size`` streams such rows, and
    DDP averages the ranks' shares). The tasks run one after the other (``task_batching='loop'``) or all at once
    under :func:`torch.func.vmap` (``'vmap'``); both compute the same function (equal meta-gradients within float
    tolerance); ``'auto'`` picks the faster one for the device (:func:`resolve_task_batching`). Meta-test
    (:meth:`forward_tasks`) uses the same choice over the tasks of a chunk.

    BatchNorm as the reference implementation: every forward (inner steps, query, meta-test) normalises with the
    current batch's statistics, so each task uses its own (transductive at meta-test: the query batch's
    statistics); running statistics are never read or updated (:func:`batch_norm_batch_stats`).

    ``frozen_backbone_at_test = False``: meta-test needs images. Per task: :meth:`before_forward_support`,
    ``forward(mode='support', img=(M, C, H, W), label=(M,))`` adapts from the meta-learned weights on all the
    support images given so far, ``forward(mode='query', img=(Q, C, H, W))`` returns ``(Q, N)`` logits of the
    adapted network. :meth:`forward_tasks` does that for ``T`` tasks given as images. Gradients are enabled
    inside, so a caller's ``torch.no_grad()`` is fine.

    Args:
        backbone (nn.Module): ``(N, C, H, W) -> (N, D)``.
        head (nn.Module): ``(N, D) -> (N, ways)`` logits, normally ``LinearHead(num_classes=ways)``.
        num_inner_steps (int): inner SGD steps in meta-training (any number >= 0). Default 2.
        inner_lr (float): inner learning rate. Default 0.01.
        first_order (bool): FOMAML (no second-order terms). Default False.
        test_num_inner_steps (int | None): inner steps at meta-test; None: ``num_inner_steps``. Default None.
        test_inner_lr (float | None): inner learning rate at meta-test; None: ``inner_lr``. Default None.
        task_batching (str): ``auto``, ``loop`` or ``vmap`` (see above). Default ``auto``.
        vmap_chunk_size (int | None): with ``vmap``, tasks per vectorised call (bounds memory); None: all.
            Default None.

    Raises:
        ConfigError: an unknown ``task_batching`` (at build time or in ``meta_test_cfg``); ValueError: a negative
        step count (at build time); ``forward(mode='support')``
        without images, labels beyond the head's classes, or an unknown ``meta_test_cfg`` key; RuntimeError: query
        before support.

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

        A meta-batch of 4 tasks, vectorised::

        >>> model.task_batching = "vmap"
        >>> out = model(mode="train", support_img=torch.rand(4, 5, 1, 28, 28), support_label=torch.arange(5).repeat(4, 1),
        ...             query_img=torch.rand(4, 5, 1, 28, 28), query_label=torch.arange(5).repeat(4, 1))
        >>> out["loss"].shape
        torch.Size([])

        Meta-test adapts on each task's support images (not features)::

        >>> model.before_meta_test({"test_num_inner_steps": 2})
        >>> model.before_forward_support()
        >>> model(mode="support", img=torch.rand(5, 1, 28, 28), label=torch.arange(5))
        >>> model(mode="query", img=torch.rand(3, 1, 28, 28)).shape
        torch.Size([3, 5])
    """

    frozen_backbone_at_test = False
    #: the runtime keeps MAML's weights contiguous (NCHW): channels-last slows its second-order meta-batch
    #: (benchmarks/results/maml_memory_format.md: 1.20x at 5-shot, 1.03x at 1-shot on 2 CPU cores)
    prefers_channels_last = False

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        num_inner_steps: int = 2,
        inner_lr: float = 0.01,
        first_order: bool = False,
        test_num_inner_steps: int | None = None,
        test_inner_lr: float | None = None,
        task_batching: str = "auto",
        vmap_chunk_size: int | None = None,
    ) -> None:
        super().__init__(backbone, head)
        resolve_task_batching(task_batching, "cpu")  # fail at build time on a bad name
        self.num_inner_steps, self.inner_lr, self.first_order = num_inner_steps, inner_lr, first_order
        self.test_num_inner_steps = num_inner_steps if test_num_inner_steps is None else test_num_inner_steps
        self.test_inner_lr = inner_lr if test_inner_lr is None else test_inner_lr
        if min(self.num_inner_steps, self.test_num_inner_steps) < 0:
            raise ValueError(f"inner steps must be >= 0, got {self.num_inner_steps} / {self.test_num_inner_steps}")
        self.task_batching, self.vmap_chunk_size = task_batching, vmap_chunk_size
        self._support: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._fast: Params | None = None

    def forward(self, mode: str = "train", **kwargs: Any) -> Any:
        """As :class:`BaseMetricClassifier`, plus ``mode='logits'``: ``img`` -> ``head(backbone(img))``."""
        if mode == "logits":
            return self.head(self.backbone(kwargs["img"]))
        return super().forward(mode, **kwargs)

    # ---- the pure per-task functions (the same for the loop and for vmap) ----------------------------------------
    def _logits(self, params: Params, img: torch.Tensor) -> torch.Tensor:
        # inside batch_norm_batch_stats: batch statistics, no running-statistics buffers read or written
        return functional_call(self, params, (), {"mode": "logits", "img": img}, strict=False)

    def _adapt(self, params: Params, img: torch.Tensor, label: torch.Tensor, steps: int, lr: float,
               first_order: bool) -> Params:
        def support_loss(p: Params) -> torch.Tensor:
            return F.cross_entropy(self._logits(p, img), label)

        for _ in range(steps):
            g = grad(support_loss)(params)
            params = {k: params[k] - lr * (g[k].detach() if first_order else g[k]) for k in params}
        return params

    def _task_query_logits(self, params: Params, s_img: torch.Tensor, s_label: torch.Tensor, q_img: torch.Tensor,
                           steps: int, lr: float, first_order: bool) -> torch.Tensor:
        return self._logits(self._adapt(params, s_img, s_label, steps, lr, first_order), q_img)

    def task_logits(self, support_img: torch.Tensor, support_label: torch.Tensor, query_img: torch.Tensor,
                    steps: int, lr: float, first_order: bool, batching: str | None = None,
                    meta_gradient: bool = True) -> torch.Tensor:
        """Query logits ``(T, Q, N)`` of ``T`` tasks, each adapted from the model's weights on its support set.

        Args:
            support_img: ``(T, M, C, H, W)``; support_label: ``(T, M)`` in ``0..N-1``; query_img: ``(T, Q, C, H, W)``.
            steps, lr: inner SGD steps and learning rate; first_order: drop the second-order terms.
            batching: ``loop``, ``vmap`` or ``auto``; None: the model's ``task_batching``.
            meta_gradient: keep the graph from the logits to the model's parameters (training). False (meta-test):
                the adaptation starts from detached weights, so no outer graph is recorded. Default True.
        """
        mode = resolve_task_batching(batching or self.task_batching, support_img.device)
        params = trainable_params(self)
        if not meta_gradient:
            params = {k: v.detach() for k, v in params.items()}
        # vmap: batch-norm from plain operations (the fused kernel's batched double backward is wrong)
        with batch_norm_batch_stats(self, from_primitives=mode == "vmap"):
            if mode == "loop":
                return torch.stack([self._task_query_logits(params, s, sl, q, steps, lr, first_order)
                                    for s, sl, q in zip(support_img, support_label, query_img)])
            fn = vmap(lambda s, sl, q: self._task_query_logits(params, s, sl, q, steps, lr, first_order),
                      chunk_size=self.vmap_chunk_size)
            return fn(support_img, support_label, query_img)

    # ---- the model's own weights -------------------------------------------------------------------------------
    def logits(self, img: torch.Tensor, params: Params | None = None) -> torch.Tensor:
        """Logits ``(B, ways)`` of ``img`` with fast weights ``params`` (None: the model's own), batch-norm on batch stats."""
        with batch_norm_batch_stats(self):
            return self._logits(trainable_params(self) if params is None else params, img)

    def adapt(self, img: torch.Tensor, label: torch.Tensor, steps: int, lr: float, first_order: bool = True) -> Params:
        """Fast weights after ``steps`` SGD steps of the cross-entropy of ``(img, label)`` from the model's weights."""
        with batch_norm_batch_stats(self):
            return self._adapt(trainable_params(self), img, label, steps, lr, first_order)

    def _check_labels(self, label: torch.Tensor) -> None:
        n_out = getattr(self.head, "num_classes", None)
        if n_out is not None and int(label.max()) >= n_out:
            raise ValueError(f"label {int(label.max())} is beyond the head's {n_out} classes (ways must match "
                             f"head.num_classes)")

    def forward_train_tasks(self, **episodes: torch.Tensor) -> dict[str, torch.Tensor]:
        """A meta-batch (5-D ``support_img``): :meth:`forward_train`, which takes both shapes."""
        return self.forward_train(**episodes)

    def forward_train(
        self, support_img: torch.Tensor, support_label: torch.Tensor, query_img: torch.Tensor,
        query_label: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Outer loss (mean query cross-entropy after adapting on each support set) and query accuracy of one episode
        (``support_img (M, C, H, W)``) or a meta-batch of ``T`` (``support_img (T, M, C, H, W)``, labels ``(T, M)``)."""
        if support_img.dim() == 4:
            support_img, support_label = support_img[None], support_label[None]
            query_img, query_label = query_img[None], query_label[None]
        self._check_labels(support_label)
        logits = self.task_logits(support_img, support_label, query_img, self.num_inner_steps, self.inner_lr,
                                  self.first_order)
        flat, labels = logits.flatten(0, 1), query_label.flatten()  # every task has Q queries: the mean of the means
        return {"loss": F.cross_entropy(flat, labels), "accuracy": accuracy(flat, labels)}

    # ---- meta-test -----------------------------------------------------------------------------------
    def before_meta_test(self, meta_test_cfg: dict[str, Any] | None = None) -> None:
        """Evaluation mode; ``meta_test_cfg`` may set ``test_num_inner_steps`` / ``test_inner_lr`` / ``task_batching``.

        Raises:
            ValueError: an unknown key; ConfigError: an unknown ``task_batching`` value.
        """
        self.eval()
        for k, v in (meta_test_cfg or {}).items():
            if k == "test_num_inner_steps":
                self.test_num_inner_steps = int(v)
            elif k == "test_inner_lr":
                self.test_inner_lr = float(v)
            elif k == "task_batching":
                resolve_task_batching(str(v), "cpu")
                self.task_batching = str(v)
            else:
                raise ValueError(f"unknown meta_test_cfg key '{k}' (test_num_inner_steps, test_inner_lr, "
                                 f"task_batching)")

    def forward_tasks(self, support_feats: torch.Tensor, support_labels: torch.Tensor, query_feats: torch.Tensor,
                      num_classes: int) -> torch.Tensor:
        """Scores ``(T, Q, N)`` of ``T`` tasks given as images: support ``(T, M, C, H, W)``, labels ``(T, M)``,
        query ``(T, Q, C, H, W)``; each adapted by ``test_num_inner_steps`` first-order steps, all through the
        ``task_batching`` choice (the same scores as the per-task protocol)."""
        self._check_labels(support_labels)
        with torch.enable_grad():
            logits = self.task_logits(support_feats, support_labels, query_feats, self.test_num_inner_steps,
                                      self.test_inner_lr, first_order=True, meta_gradient=False)
        return logits.detach()

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
