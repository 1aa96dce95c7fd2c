"""Baseline: A Closer Look at Few-shot Classification (Chen et al., ICLR 2019), the linear-head baseline."""

from __future__ import annotations

from fewray.algorithms.builder import CLASSIFIERS
from fewray.algorithms.classifiers.base_finetune import BaseFinetuneClassifier


@CLASSIFIERS.register
class Baseline(BaseFinetuneClassifier):
    """Baseline: pre-train backbone + :class:`~fewray.algorithms.heads.LinearHead` on all base classes, then
    fine-tune a new linear head on each task's support features with the backbone frozen.

    From "A Closer Look at Few-shot Classification" (Chen, Liu, Kira, Wang and Huang, ICLR 2019).
    Arguments as :class:`BaseFinetuneClassifier`.

    Example::

        >>> import torch
        >>> from fewray.algorithms import build_classifier
        >>> model = build_classifier({"type": "Baseline", "backbone": {"type": "Conv4", "in_channels": 1},
        ...     "head": {"type": "LinearHead", "num_classes": 4112, "in_channels": 64}})
        >>> out = model(mode="train", img=torch.rand(8, 1, 28, 28), gt_label=torch.randint(0, 4112, (8,)))
        >>> sorted(out), out["loss"].shape       # pre-training: a plain batch of the 4112 base classes
        (['accuracy', 'loss'], torch.Size([]))

        Meta-test: a new 5-way head per task, fine-tuned on the frozen support features ``(T, N*K, D)``::

        >>> model.before_meta_test({"finetune_steps": 10})
        >>> scores = model.forward_tasks(torch.randn(2, 5, 64), torch.arange(5).repeat(2, 1),
        ...                              torch.randn(2, 3, 64), num_classes=5)
        >>> scores.shape                          # (tasks, queries, ways)
        torch.Size([2, 3, 5])
    """
