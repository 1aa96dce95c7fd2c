"""The size of a batch-trained model's pre-training head: one rule for training, meta-test and the APIs.

Fine-tune methods (Baseline, Baseline++, NegMargin; ``train_on_batches = True``) pre-train a head with one
output per base class. Their configs leave ``model.head.num_classes`` out: training fills it with the
catalog's train-split class count, and the checkpoint's stored config carries it from then on.
"""

from __future__ import annotations

from typing import Any

from fewray.algorithms.builder import model_class
from fewray.platform.config import ExperimentConfig, config_from_dict
from fewray.data.catalog import read_labels
from fewray.platform.errors import ConfigError


def trains_on_batches(cfg: ExperimentConfig) -> bool:
    """Whether ``cfg.model`` is pre-trained on plain labelled batches (Baseline, Baseline++, NegMargin)."""
    return bool(getattr(model_class(cfg.model.type), "train_on_batches", False))


def resolve_base_classes(cfg: ExperimentConfig, state: dict[str, Any] | None = None) -> ExperimentConfig:
    """``cfg`` with ``model.head.num_classes`` of a batch-trained model filled in.

    Args:
        cfg: a validated config; returned as is for episodic models.
        state: a loaded checkpoint. With one, a head that leaves ``num_classes`` out takes the checkpoint's
            (so the pre-trained head is rebuilt at its trained size, whatever catalog the config points
            at); without one, the class count of the catalog's ``train`` split is used and an explicit
            different value is an error.

    Returns:
        ``cfg`` itself or a validated copy with ``model.head.num_classes`` set.

    Raises:
        ConfigError: (no ``state``) ``model.head.num_classes`` differs from the train split's class count.
    """
    if not trains_on_batches(cfg):
        return cfg
    given = cfg.model.head.get("num_classes")
    if state is not None:
        if given is not None:
            return cfg  # a wrong explicit value fails in load_model_state, naming the checkpoint
        n = ((state.get("config") or {}).get("model") or {}).get("head", {}).get("num_classes")
        if n is None:
            return cfg
    else:
        labels = read_labels(cfg.data.root, "train")
        n = int(labels.max()) + 1 if len(labels) else 0
        if given is not None and int(given) != n:
            raise ConfigError(f"model.head.num_classes is {given} but the train split of {cfg.data.root} has {n} "
                              f"classes (leave it out to use the split's)")
    raw = cfg.to_dict()
    raw["model"]["head"]["num_classes"] = int(n)
    return config_from_dict(raw)
