"""BaseFinetuneClassifier: pre-train on all base classes, then fine-tune a new head on each task's support set."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.func import functional_call, vmap

from fewray.algorithms.builder import HEADS
from fewray.algorithms.classifiers.base_metric import BaseMetricClassifier
from fewray.algorithms.heads.base_finetune_head import BaseFinetuneHead
from fewray.core.errors import ConfigError
from fewray.core.registry import validate_kwargs

#: the fine-tuning settings, their defaults (mmfewshot's meta-test ``support.train``) and types
FINETUNE_DEFAULTS: dict[str, Any] = {
    "finetune_steps": 150,
    "finetune_lr": 0.01,
    "finetune_momentum": 0.9,
    "finetune_dampening": 0.9,
    "finetune_weight_decay": 0.001,
    "finetune_batch_size": 4,
    "finetune_seed": 0,
}


def _check_task_batching(mode: str) -> str:
    if mode not in ("auto", "loop", "vmap"):
        raise ConfigError(f"unknown task_batching '{mode}' (one of auto, loop, vmap; config key model.task_batching)")
    return mode


def _batch_order(m: int, batch_size: int, steps: int, generator: torch.Generator | None) -> list[torch.Tensor]:
    """The mini-batch indices of :func:`finetune_head`'s ``steps`` steps over ``m`` support samples."""
    b = max(1, min(batch_size, m))
    out: list[torch.Tensor] = []
    while len(out) < steps:
        out.extend(torch.randperm(m, generator=generator)[: (m // b) * b].split(b))
    return out[:steps]


def finetune_head(
    head: BaseFinetuneHead,
    feats: torch.Tensor,
    labels: torch.Tensor,
    steps: int = 150,
    lr: float = 0.01,
    momentum: float = 0.9,
    dampening: float = 0.9,
    weight_decay: float = 0.001,
    batch_size: int = 4,
    generator: torch.Generator | None = None,
) -> BaseFinetuneHead:
    """Train ``head`` in place with SGD on ``feats`` ``(M, D)`` / ``labels`` ``(M,)`` for ``steps`` mini-batches.

    Mini-batches of ``min(batch_size, M)`` come from shuffled passes over the support set (``generator`` on
    the CPU draws the order); an incomplete last batch of a pass is dropped. Gradients are enabled inside,
    so this works under a caller's ``torch.no_grad()``.

    Returns:
        ``head`` (in eval mode).
    """
    feats, labels = feats.detach().flatten(1), labels.detach()
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=momentum, dampening=dampening,
                          weight_decay=weight_decay)
    head.train()
    with torch.enable_grad():
        for idx in _batch_order(feats.shape[0], batch_size, steps, generator):
            loss = head.forward_train(feats[idx.to(feats.device)], labels[idx.to(feats.device)])["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return head.eval()


def finetune_heads_batched(
    head: BaseFinetuneHead,
    feats: torch.Tensor,
    labels: torch.Tensor,
    steps: int = 150,
    lr: float = 0.01,
    momentum: float = 0.9,
    dampening: float = 0.9,
    weight_decay: float = 0.001,
    batch_size: int = 4,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Fine-tune ``T`` copies of ``head`` at once, copy ``t`` on task ``t``'s support set.

    Same arithmetic as :func:`finetune_head` run task by task from the same initial ``head`` and the same
    ``generator`` state (every task sees the same mini-batch positions): SGD is element-wise, so one
    optimizer over parameters stacked on a leading task axis is ``T`` independent optimizers, and the
    per-task losses are computed with :func:`torch.func.vmap` over :func:`torch.func.functional_call`.

    Args:
        head: the initial head (not modified). feats: ``(T, M, D)``; labels: ``(T, M)``; the rest as
            :func:`finetune_head`.

    Returns:
        The fine-tuned parameters ``{name: (T, *shape)}``; score with :func:`batched_head_logits`.
    """
    t, m = feats.shape[:2]
    feats, labels = feats.detach().flatten(2), labels.detach()
    params = {k: p.detach().unsqueeze(0).repeat(t, *([1] * p.dim())).requires_grad_()
              for k, p in head.named_parameters()}
    buffers = dict(head.named_buffers())
    opt = torch.optim.SGD(list(params.values()), lr=lr, momentum=momentum, dampening=dampening,
                          weight_decay=weight_decay)

    def task_loss(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return head.loss(functional_call(head, (p, buffers), (x, y)), y)

    losses = vmap(task_loss)
    with torch.enable_grad():
        for idx in _batch_order(m, batch_size, steps, generator):
            idx = idx.to(feats.device)
            loss = losses(params, feats[:, idx], labels[:, idx]).sum()  # task t's loss only reaches params[t]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return {k: v.detach() for k, v in params.items()}


def batched_head_logits(head: BaseFinetuneHead, params: dict[str, torch.Tensor], feats: torch.Tensor) -> torch.Tensor:
    """Logits ``(T, Q, N)`` of query features ``(T, Q, D)`` under stacked head parameters ``{name: (T, ...)}``."""
    buffers = dict(head.named_buffers())
    return vmap(lambda p, x: functional_call(head, (p, buffers), (x,)))(params, feats.flatten(2))


class BaseFinetuneClassifier(BaseMetricClassifier):
    """Fine-tune based few-shot classification (mmfewshot's BaseFinetuneClassifier).

    Training: a plain classifier over all base classes on labelled batches,
    ``forward(mode='train', img=(B, C, H, W), gt_label=(B,))`` (or ``feats=(B, D)``) ->
    ``{"loss", "accuracy"}``. Meta-test: the backbone stays frozen (``frozen_backbone_at_test``) and for each
    task a NEW head for the task's ``N`` classes is trained on the support features (SGD, ``finetune_steps``
    mini-batches of ``finetune_batch_size``), then scores the query features. :meth:`forward_tasks` fine-tunes
    the heads of many tasks in one batched computation (same scores as the per-task protocol, 10-100x faster
    on CPU).

    Determinism: each task's head initialisation and mini-batch order are drawn from ``finetune_seed``
    alone (a forked, re-seeded RNG and a seeded CPU generator), so a task's scores depend only on its own
    data, never on how tasks are spread over workers or on the global RNG (which is left untouched).

    Args:
        backbone (nn.Module): ``(N, C, H, W) -> (N, D)``.
        head (BaseFinetuneHead): the training head, ``num_classes`` = number of base classes.
        meta_test_head (dict | None): config of the per-task head (``{type: ..., ...}``; ``num_classes`` is set
            to the task's ways, ``in_channels`` defaults to the training head's). None: a fresh copy of the
            training head's type and arguments. Default None.
        finetune_steps (int): SGD steps per task. Default 150.
        finetune_lr (float): learning rate. Default 0.01.
        finetune_momentum (float): momentum. Default 0.9.
        finetune_dampening (float): momentum dampening (mmfewshot: 0.9). Default 0.9.
        finetune_weight_decay (float): weight decay. Default 0.001.
        finetune_batch_size (int): support mini-batch size. Default 4.
        finetune_seed (int): seed of each task's head initialisation and batch order. Default 0.
        task_batching (str): how :meth:`forward_tasks` runs the tasks of a chunk: ``vmap`` (all heads fine-tuned
            in one vectorised computation), ``loop`` (the per-task protocol, one after the other) or ``auto``
            (``vmap`` on every device: on these CPUs it measured far faster, ``benchmarks/maml_speed.py``); the
            same scores either way. Also a ``meta_test_cfg`` key. Default ``auto``.

    Raises:
        TypeError: ``head`` is not a :class:`BaseFinetuneHead`; ConfigError: a bad ``meta_test_head``; ValueError: ``forward(mode='train')`` given an
        episode (``support_img``...) instead of a labelled batch; RuntimeError: ``forward_query`` before the
        task head was trained.
    """

    #: pre-trained on plain labelled batches of all base classes, not on episodes (see fewray.platform.train)
    train_on_batches = True

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        meta_test_head: dict[str, Any] | None = None,
        finetune_steps: int = 150,
        finetune_lr: float = 0.01,
        finetune_momentum: float = 0.9,
        finetune_dampening: float = 0.9,
        finetune_weight_decay: float = 0.001,
        finetune_batch_size: int = 4,
        finetune_seed: int = 0,
        task_batching: str = "auto",
    ) -> None:
        super().__init__(backbone, head)
        self.task_batching = _check_task_batching(task_batching)
        if not isinstance(head, BaseFinetuneHead):
            raise TypeError(f"{type(self).__name__} needs a fine-tune head (LinearHead, CosineDistanceHead, "
                            f"NegMarginHead), got {type(head).__name__}")
        self.meta_test_head_cfg = dict(meta_test_head) if meta_test_head else None
        if self.meta_test_head_cfg is not None:  # fail at build time, naming the key
            if "type" not in self.meta_test_head_cfg:
                raise ConfigError("config key 'model.meta_test_head.type' is missing")
            kwargs = {k: v for k, v in self.meta_test_head_cfg.items() if k not in ("type", "num_classes")}
            validate_kwargs(HEADS.get(self.meta_test_head_cfg["type"]), kwargs, "model.meta_test_head")
        self.finetune_cfg: dict[str, Any] = {
            "finetune_steps": finetune_steps, "finetune_lr": finetune_lr, "finetune_momentum": finetune_momentum,
            "finetune_dampening": finetune_dampening, "finetune_weight_decay": finetune_weight_decay,
            "finetune_batch_size": finetune_batch_size, "finetune_seed": finetune_seed,
        }
        self.task_head: BaseFinetuneHead | None = None
        self._support: list[tuple[torch.Tensor, torch.Tensor]] = []

    # ---- training on plain batches -------------------------------------------------------------------
    def forward_train(
        self, gt_label: torch.Tensor | None = None, img: torch.Tensor | None = None,
        feats: torch.Tensor | None = None, **episode: Any,
    ) -> dict[str, torch.Tensor]:
        """Loss and accuracy of a labelled batch ``img`` ``(B, C, H, W)`` (or ``feats`` ``(B, D)``), ``gt_label`` ``(B,)``."""
        if episode or gt_label is None:
            raise ValueError(f"{type(self).__name__} trains on labelled batches: forward(mode='train', img=..., "
                             f"gt_label=...), got {sorted(episode) or 'no gt_label'}")
        if feats is None:
            feats = self.extract_feat(img)
        return self.head.forward_train(feats, gt_label)

    # ---- meta-test -----------------------------------------------------------------------------------
    def before_meta_test(self, meta_test_cfg: dict[str, Any] | None = None) -> None:
        """Evaluation mode and a frozen backbone; ``meta_test_cfg`` may override any ``finetune_*`` setting.

        Raises:
            ValueError: an unknown key in ``meta_test_cfg``.
        """
        super().before_meta_test(meta_test_cfg)
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        for k, v in (meta_test_cfg or {}).items():
            if k == "task_batching":
                self.task_batching = _check_task_batching(str(v))
                continue
            if k not in FINETUNE_DEFAULTS:
                raise ValueError(f"unknown meta_test_cfg key '{k}' (known: {', '.join(FINETUNE_DEFAULTS)}, "
                                 f"task_batching)")
            self.finetune_cfg[k] = type(FINETUNE_DEFAULTS[k])(v)

    def new_task_head(self, num_classes: int) -> BaseFinetuneHead:
        """A freshly initialised head for ``num_classes`` classes (from ``meta_test_head`` or the training head)."""
        if self.meta_test_head_cfg is None:
            return self.head.clone(num_classes)
        cfg = {"in_channels": self.head.in_channels, **self.meta_test_head_cfg, "num_classes": num_classes}
        return HEADS.build(cfg, "model.meta_test_head")

    def before_forward_support(self) -> None:
        """Start a new task: forget the support set and the previous task head."""
        self._support, self.task_head = [], None

    def forward_support(self, label: torch.Tensor, img: torch.Tensor | None = None,
                        feats: torch.Tensor | None = None) -> None:
        """Store support images ``(M, C, H, W)`` (features are extracted without grad) or features ``(M, D)``."""
        if feats is None:
            with torch.no_grad():
                feats = self.extract_feat(img)
        self._support.append((feats.detach(), label))

    def _initial_task_head(self, num_classes: int) -> tuple[BaseFinetuneHead, torch.Generator]:
        """The seeded initial head of a task and the generator of its mini-batch order."""
        seed = self.finetune_cfg["finetune_seed"]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            head = self.new_task_head(num_classes)
        return head, torch.Generator().manual_seed(seed)

    def before_forward_query(self, num_classes: int | None = None) -> None:
        """Train a new head on the stored support features (deterministic given ``finetune_seed``)."""
        feats = torch.cat([f for f, _ in self._support])
        labels = torch.cat([lab for _, lab in self._support])
        head, gen = self._initial_task_head(num_classes or int(labels.max()) + 1)
        c = self.finetune_cfg
        self.task_head = finetune_head(
            head.to(feats.device), feats, labels, steps=c["finetune_steps"], lr=c["finetune_lr"],
            momentum=c["finetune_momentum"], dampening=c["finetune_dampening"],
            weight_decay=c["finetune_weight_decay"], batch_size=c["finetune_batch_size"], generator=gen,
        )

    def forward_query(self, img: torch.Tensor | None = None, feats: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(Q, N)`` of the task head for query images or features."""
        if self.task_head is None:
            raise RuntimeError("call before_forward_query() after the support set")
        if feats is None:
            with torch.no_grad():
                feats = self.extract_feat(img)
        return self.task_head.forward_query(feats)

    def forward_tasks(
        self, support_feats: torch.Tensor, support_labels: torch.Tensor, query_feats: torch.Tensor, num_classes: int
    ) -> torch.Tensor:
        """Scores ``(T, Q, N)`` of ``T`` tasks on frozen features: one head per task, all fine-tuned together
        (:func:`finetune_heads_batched`, ``task_batching`` ``vmap`` / ``auto``) or by the per-task protocol one
        after the other (``loop``); the same scores either way.

        Args:
            support_feats: ``(T, N*K, D)``; support_labels: ``(T, N*K)`` in ``0..N-1``;
            query_feats: ``(T, Q, D)``; num_classes: N.
        """
        if self.task_batching == "loop":
            scores = []
            for sf, sl, qf in zip(support_feats, support_labels, query_feats):
                self.before_forward_support()
                self.forward_support(label=sl, feats=sf)
                self.before_forward_query(num_classes)
                scores.append(self.forward_query(feats=qf))
            return torch.stack(scores)
        head, gen = self._initial_task_head(num_classes)
        head = head.to(support_feats.device)
        c = self.finetune_cfg
        params = finetune_heads_batched(
            head, support_feats, support_labels, steps=c["finetune_steps"], lr=c["finetune_lr"],
            momentum=c["finetune_momentum"], dampening=c["finetune_dampening"],
            weight_decay=c["finetune_weight_decay"], batch_size=c["finetune_batch_size"], generator=gen,
        )
        with torch.no_grad():
            return batched_head_logits(head.eval(), params, query_feats)
