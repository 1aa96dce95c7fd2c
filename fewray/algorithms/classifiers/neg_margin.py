"""NegMargin: Negative Margin Matters (Liu et al., ECCV 2020)."""

from __future__ import annotations

from fewray.algorithms.builder import CLASSIFIERS
from fewray.algorithms.classifiers.base_finetune import BaseFinetuneClassifier


@CLASSIFIERS.register
class NegMargin(BaseFinetuneClassifier):
    """Negative-margin classifier: pre-train with :class:`~fewray.algorithms.heads.NegMarginHead` (a negative
    margin on the true-class logit), then fine-tune a new head per task (mmfewshot's meta-test head: margin 0,
    temperature 5, given as ``meta_test_head``).

    From "Negative Margin Matters: Understanding Margin in Few-shot Classification" (Liu, Cao, Lin, Li, Zhang,
    Long and Hu, ECCV 2020). Arguments as :class:`BaseFinetuneClassifier`.

    Example::

        >>> from fewray.algorithms import build_classifier
        >>> model = build_classifier({"type": "NegMargin", "backbone": {"type": "Conv4", "in_channels": 1},
        ...     "head": {"type": "NegMarginHead", "num_classes": 4112, "in_channels": 64, "margin": -0.02},
        ...     "meta_test_head": {"type": "NegMarginHead", "margin": 0.0, "temperature": 5.0}})
        >>> head = model.new_task_head(5)   # the per-task head fine-tuned at meta-test
        >>> head.num_classes, head.margin, head.temperature
        (5, 0.0, 5.0)
    """
