"""Validation during training: what rank 0 runs every ``train.val_interval`` steps to score and keep checkpoints.

A training task says how its model is validated (:meth:`fewray.tasks.base.TrainingTask.validator`): a callable
``(model, device) -> {metric: float}`` built once on rank 0 from the config. Few-shot classification's is
:class:`MetaValidator` (mmfewshot's MetaTestEvalHook: episodes of the ``val`` split on one feature pass); the
multi-label task's scores the ``val`` split's images (:class:`fewray.tasks.multi_label.MultiLabelValidator`).
"""

from __future__ import annotations

import torch

from fewray.evaluation.fewshot_accuracy import FewShotAccuracy
from fewray.platform.config import ExperimentConfig
from fewray.data.catalog import load_split
from fewray.platform.features import extract_features
from fewray.platform.metatest import evaluate_tasks


class MetaValidator:
    """Meta-validation on a frozen copy of the features of a split (mmfewshot's MetaTestEvalHook).

    Args:
        cfg (ExperimentConfig): uses ``data`` and ``val`` (split, ways, shots, queries, num_tasks, seed).
    """

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.cfg = cfg
        data = load_split(cfg.data.root, cfg.val.split, cfg.data.channels)
        self.images, self.labels = data.images, data.labels

    def __call__(self, model: torch.nn.Module, device: torch.device | str = "cpu") -> dict[str, float]:
        """``{"accuracy_mean", "accuracy_std", "ci95"}`` in percent; leaves ``model`` in train mode.

        A model that adapts its backbone per task (MAML, ``frozen_backbone_at_test = False``) is
        validated on the images, the others on one feature pass over the split.
        """
        v = self.cfg.val
        if getattr(model, "frozen_backbone_at_test", True):
            inputs = extract_features(model, self.images, v.batch_size, str(device)).cpu()
        else:
            inputs = torch.from_numpy(self.images)
        accs = evaluate_tasks(model, inputs, self.labels, v.ways, v.shots, v.queries, v.seed, range(v.num_tasks), v.split)
        model.train()
        metrics = FewShotAccuracy().compute(accs)  # one shard: the evaluator of the meta-test fan-out
        return {k: metrics[k] for k in ("accuracy_mean", "accuracy_std", "ci95")}

