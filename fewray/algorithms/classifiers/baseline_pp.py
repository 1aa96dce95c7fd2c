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

        >>> model = build_classifier({"type": "BaselinePP", "backbone": {"type": "Conv4", "in_channels": 1},
        ...     "head": {"type": "CosineDistanceHead", "num_classes": 4112, "in_channels": 64}})
    """
