"""MetaBaseline: Meta-Baseline: Exploring Simple Meta-Learning for Few-Shot Learning (Chen et al., ICCV 2021)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from fewray.algorithms.builder import CLASSIFIERS
from fewray.algorithms.classifiers.base_metric import BaseMetricClassifier


def backbone_state(source: str | Path | dict[str, Any]) -> dict[str, torch.Tensor]:
    """The backbone ``state_dict`` inside ``source``.

    ``source`` is a path to a ``checkpoint.pt`` (a dict with ``"model"``, as fewray writes), a checkpoint
    directory, a ``train_result.json`` (its best checkpoint) or a bare state dict file, or such a dict
    itself. Keys ``backbone.*`` of a classifier state are stripped of the prefix; a state without
    ``backbone.`` keys is taken as a backbone state as is. Files load with ``weights_only=True``.

    Raises:
        CheckpointError: the path does not exist or cannot be read.
    """
    if isinstance(source, (str, Path)):
        from fewray.algorithms.utils.weights import load_weights

        source = load_weights(source)
    state = source.get("model", source) if isinstance(source, dict) else source
    sub = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    return sub or dict(state)


@CLASSIFIERS.register
class MetaBaseline(BaseMetricClassifier):
    """Meta-Baseline: a backbone pre-trained as a whole-class classifier (Baseline), then meta-trained with
    :class:`~fewray.algorithms.heads.MetaBaselineHead` (cosine to prototypes, learnable temperature).

    Stage 1 is :class:`~fewray.algorithms.classifiers.Baseline` trained on all base classes; stage 2 builds
    a MetaBaseline with ``pretrained_backbone`` pointing at the stage-1 checkpoint (or calls
    :meth:`load_backbone`) and meta-trains on episodes.

    Args:
        backbone (nn.Module): e.g. ``ResNet12``.
        head (nn.Module): normally ``MetaBaselineHead``.
        pretrained_backbone (str | None): path of a stage-1 ``checkpoint.pt`` (or its ``train_result.json``) whose ``backbone.*`` weights
            initialise the backbone at construction. Default None.

    Raises:
        CheckpointError: ``pretrained_backbone`` does not exist or cannot be read; RuntimeError: its keys do not match.

    Example::

        >>> import torch
        >>> from fewray.algorithms import build_classifier
        >>> baseline_model = build_classifier({"type": "Baseline",   # stage 1 (trained, in practice)
        ...     "backbone": {"type": "Conv4", "in_channels": 1},
        ...     "head": {"type": "LinearHead", "num_classes": 20, "in_channels": 64}})
        >>> model = build_classifier({"type": "MetaBaseline", "backbone": {"type": "Conv4", "in_channels": 1},
        ...                           "head": {"type": "MetaBaselineHead"}})
        >>> model.load_backbone(baseline_model.state_dict())   # only the backbone.* weights are taken
        >>> torch.equal(model.backbone.layers[0][0].weight, baseline_model.backbone.layers[0][0].weight)
        True

        Or from a stage-1 checkpoint file at construction::

        >>> import os, tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = os.path.join(tmp, "checkpoint.pt")
        ...     torch.save({"model": baseline_model.state_dict()}, path)
        ...     model = build_classifier({"type": "MetaBaseline", "pretrained_backbone": path,
        ...         "backbone": {"type": "Conv4", "in_channels": 1}, "head": {"type": "MetaBaselineHead"}})
        >>> torch.equal(model.backbone.layers[0][0].weight, baseline_model.backbone.layers[0][0].weight)
        True
    """

    #: arguments that load weights from files (skipped when a checkpoint provides the weights)
    init_file_args = ("pretrained_backbone",)

    def __init__(self, backbone: nn.Module, head: nn.Module, pretrained_backbone: str | None = None) -> None:
        super().__init__(backbone, head)
        self.pretrained_backbone = pretrained_backbone
        if pretrained_backbone:
            self.load_backbone(pretrained_backbone)

    def load_backbone(self, source: str | Path | dict[str, Any]) -> None:
        """Load the backbone weights of a Baseline checkpoint (path or state dict, see :func:`backbone_state`)."""
        self.backbone.load_state_dict(backbone_state(source))
