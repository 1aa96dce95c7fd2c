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

        >>> model = build_classifier({"type": "Baseline", "backbone": {"type": "Conv4", "in_channels": 1},
        ...     "head": {"type": "LinearHead", "num_classes": 4112, "in_channels": 64}})
        >>> model(mode="train", img=torch.rand(8, 1, 28, 28), gt_label=torch.randint(0, 4112, (8,)))["loss"]
    """
