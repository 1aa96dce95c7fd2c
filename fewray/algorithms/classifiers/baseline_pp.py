"""BaselinePP: Baseline++ of A Closer Look at Few-shot Classification (Chen et al., ICLR 2019)."""

from __future__ import annotations

from fewray.algorithms.builder import CLASSIFIERS
from fewray.algorithms.classifiers.base_finetune import BaseFinetuneClassifier


@CLASSIFIERS.register
class BaselinePP(BaseFinetuneClassifier):
    """Baseline++: as :class:`Baseline` with a cosine classifier (:class:`~fewray.algorithms.heads.CosineDistanceHead`)
    for both pre-training and the per-task fine-tuning.

    From "A Closer Look at Few-shot Classification" (Chen, Liu, Kira, Wang and Huang, ICLR 2019).
    Arguments as :class:`BaseFinetuneClassifier`.

    Example::

        >>> import torch
        >>> from fewray.algorithms import build_classifier
        >>> model = build_classifier({"type": "BaselinePP", "backbone": {"type": "Conv4", "in_channels": 1},
        ...     "head": {"type": "CosineDistanceHead", "num_classes": 4112, "in_channels": 64}})
        >>> model.before_meta_test({"finetune_steps": 10})   # one task: support, fine-tune, query
        >>> model.before_forward_support()
        >>> model(mode="support", img=torch.rand(5, 1, 28, 28), label=torch.arange(5))
        >>> model.before_forward_query()                      # trains a 5-way cosine head
        >>> type(model.task_head).__name__, model(mode="query", img=torch.rand(3, 1, 28, 28)).shape
        ('CosineDistanceHead', torch.Size([3, 5]))
    """
