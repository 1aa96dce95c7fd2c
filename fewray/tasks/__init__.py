"""Training tasks: what a task gives the runtime, so that :mod:`fewray.platform.train` knows no method by name.

A :class:`~fewray.tasks.base.TrainingTask` says how Ray Data streams its training batches, which keyword
arguments the model's training call takes from a batch (the call returns a dict of losses: torchvision's
convention, summed for the step and each logged), what the throughput is counted in, and how the model is
validated during training (``validator(cfg)``: default few-shot meta-validation; ``eval_model``,
``val_metrics``). A model class names its task with the class attribute ``train_task`` (default ``"episodes"``).

===============  ====================================================  ===========================================
task             batches (Ray Data)                                    models
===============  ====================================================  ===========================================
``episodes``     N-way K-shot Q-query episodes (EpisodeBuilder)        ProtoNet, MatchingNet, RelationNet, MAML, ...
``batches``      shuffled labelled batches of all base classes         Baseline, Baseline++, NegMargin, ArcFace
``multiview``    two augmented views per image, labels unused          SimCLR (self-supervised)
``multi_label``  shuffled batches with multi-hot targets, validated    ImageClassifier with a multi-label head
                 by mAP on the val split's images
``detection``    detection batches (images + boxes) of a detection     FasterRCNN, TFA, FSCE
                 catalog, K-shot sets; validated by COCO AP
``query_sup...`` ``query_support_detection``: detection batches with   MetaRCNN, FSDetView, AttentionRPNDetector
                 support instances; validated after ``model_init``
``mpsr_det...``  ``mpsr_detection``: detection batches with each       MPSR
                 step's objects cropped at several scales
===============  ====================================================  ===========================================

Example::

    >>> from fewray.tasks import TASKS
    >>> sorted(TASKS.list())
    ['batches', 'detection', 'episodes', 'mpsr_detection', 'multi_label', 'multiview', 'query_support_detection']
"""

from fewray.tasks.base import TASKS, TrainingTask, task_for, task_for_class
from fewray.tasks import detection, fewshot, mpsr, multi_label, query_support, selfsup  # noqa: F401,E402  (registers the tasks)

__all__ = ["TASKS", "TrainingTask", "task_for", "task_for_class"]
