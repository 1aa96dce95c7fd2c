"""ArcFaceBaseline: a Baseline++-style few-shot classifier pre-trained with an ArcFace head (mmpretrain's ArcFace)."""

from collections.abc import Sequence
from typing import Any

import torch
from pydantic import ConfigDict, with_config
from torch import nn
from typing_extensions import TypedDict

from fewray.algorithms.builder import CLASSIFIERS
from fewray.algorithms.classifiers.base_finetune import BaseFinetuneClassifier
from fewray.algorithms.cls_heads.arcface_cls_head import ArcFaceClsHead, adaptive_margins
from fewray.core.errors import ConfigError
from fewray.core.registry import validate_kwargs

@with_config(ConfigDict(extra="forbid"))
class AdaptiveMarginsConfig(TypedDict, total=False):
    """``model.adaptive_margins``: the keyword arguments of :func:`adaptive_margins` but the counts."""

    margin_min: float
    margin_max: float
    power: float


#: the per-task head when ``meta_test_head`` is not given: Baseline++'s cosine classifier
DEFAULT_META_TEST_HEAD: dict[str, Any] = {"type": "CosineDistanceHead"}


@CLASSIFIERS.register
class ArcFaceBaseline(BaseFinetuneClassifier):
    """Pre-train a backbone with :class:`~fewray.algorithms.cls_heads.ArcFaceClsHead` on all base classes, then
    meta-test as Baseline++: a new cosine head per task, fine-tuned on the support features.

    The pre-training is :class:`~fewray.algorithms.classifiers.BaselinePP`'s with the cosine classifier replaced
    by ArcFace ("ArcFace: Additive Angular Margin Loss for Deep Face Recognition", Deng et al., CVPR 2019,
    https://arxiv.org/abs/1801.07698; sub-center ArcFace with ``head.num_subcenters > 1``); the per-task head
    is ``meta_test_head``, by default Baseline++'s :class:`~fewray.algorithms.heads.CosineDistanceHead`
    (the pre-training head itself is never cloned for a task: its margins belong to the base classes).

    Adaptive margins (mmpretrain's ``SetAdaptiveMarginsHook``, Ha et al. 2020, https://arxiv.org/abs/2010.05350):
    with ``adaptive_margins`` set, the training loop must call :meth:`before_train` with the train split's
    per-class image counts before the first step; training without that call is an error, never silently
    plain ArcFace.

    Args:
        backbone (nn.Module): ``(N, C, H, W) -> (N, D)``.
        head (ArcFaceClsHead): the pre-training head, ``num_classes`` = number of base classes.
        meta_test_head (dict | None): the per-task head config. None: ``{type: CosineDistanceHead}``. Default None.
        adaptive_margins (dict | None): keyword arguments of
            :func:`~fewray.algorithms.cls_heads.adaptive_margins` (``margin_min``, ``margin_max``, ``power``;
            ``{}`` for its defaults 0.05, 0.5, -0.25); None: the head's own ``margins``. Default None.
        finetune_*: as :class:`~fewray.algorithms.classifiers.BaseFinetuneClassifier`.

    Raises:
        ConfigError: ``head`` is not an ArcFaceClsHead, an unknown or mistyped ``adaptive_margins`` key, a bad
            ``meta_test_head`` (each naming the key). RuntimeError: ``forward(mode='train')`` with
            ``adaptive_margins`` before :meth:`before_train`.

    Example::

        >>> import torch
        >>> from fewray.algorithms import build_classifier
        >>> model = build_classifier({"type": "ArcFaceBaseline", "backbone": {"type": "Conv4", "in_channels": 1},
        ...     "head": {"type": "ArcFaceClsHead", "num_classes": 20, "in_channels": 64, "scale": 16.0},
        ...     "adaptive_margins": {"margin_min": 0.1, "margin_max": 0.5}})
        >>> model.before_train(class_counts=[20] * 19 + [5])  # the training loop's call at the start
        >>> out = model(mode="train", img=torch.rand(8, 1, 28, 28), gt_label=torch.randint(0, 20, (8,)))
        >>> sorted(out), out["loss"].shape
        (['accuracy', 'loss'], torch.Size([]))
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        meta_test_head: dict[str, Any] | None = None,
        adaptive_margins: AdaptiveMarginsConfig | None = None,
        **finetune: Any,
    ) -> None:
        if not isinstance(head, ArcFaceClsHead):
            raise ConfigError(f"config key 'model.head.type': {type(self).__name__} pre-trains with an "
                              f"ArcFaceClsHead, got {type(head).__name__}")
        # finetune_steps, finetune_lr, ...: BaseFinetuneClassifier's, with its defaults (the registry validates
        # them against its signature)
        super().__init__(backbone, head, meta_test_head=dict(meta_test_head or DEFAULT_META_TEST_HEAD), **finetune)
        self.adaptive_margins_cfg: dict[str, float] | None = None
        if adaptive_margins is not None:  # validated here too for direct construction (build_classifier did)
            self.adaptive_margins_cfg = validate_kwargs(
                _adaptive_margins_args, {"adaptive_margins": adaptive_margins}, "model")["adaptive_margins"]
        self.margins_ready = adaptive_margins is None

    def before_train(self, class_counts: Sequence[int] | torch.Tensor | None = None) -> None:
        """Training-start hook (mmpretrain's ``before_train``): set adaptive margins from class counts.

        Args:
            class_counts (Sequence[int] | Tensor | None): ``(num_classes,)`` training images per base class,
                e.g. ``numpy.bincount(train_labels, minlength=num_classes)``. Needed when ``adaptive_margins``
                is set; ignored otherwise.

        Raises:
            ValueError: ``adaptive_margins`` is set and ``class_counts`` is None or not ``num_classes`` long.
        """
        if self.adaptive_margins_cfg is None:
            return
        if class_counts is None:
            raise ValueError("model.adaptive_margins is set: before_train needs the train split's class counts")
        margins = adaptive_margins(class_counts, **self.adaptive_margins_cfg)
        if margins.numel() != self.head.num_classes:
            raise ValueError(f"{margins.numel()} class counts but model.head.num_classes is {self.head.num_classes}")
        self.head.set_margins(margins)
        self.margins_ready = True

    def forward_train(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """As :meth:`BaseFinetuneClassifier.forward_train`; refuses to train before adaptive margins are set."""
        if not self.margins_ready:
            raise RuntimeError("model.adaptive_margins is set but before_train(class_counts) was not called "
                               "before training: the margins would silently be the head's own")
        return super().forward_train(*args, **kwargs)


def _adaptive_margins_args(adaptive_margins: AdaptiveMarginsConfig) -> None:
    """The signature :func:`validate_kwargs` checks ``model.adaptive_margins`` against."""
