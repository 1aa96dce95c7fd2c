"""Few-shot models as plain PyTorch modules: backbones, heads and classifiers (no Ray, no MLflow).

Registries map config ``type:`` names to classes:
:data:`BACKBONES`, :data:`HEADS`, :data:`CLASSIFIERS`, :data:`LOSSES`. :func:`build_classifier`
builds a classifier from a ``model:`` config section.
"""

from fewray.algorithms.builder import (BACKBONES, CLASSIFIERS, DETECTORS, HEADS, HOOKS, LOSSES, NECKS, RETRIEVERS,
                                       SELFSUP, build_classifier, model_class)

# Importing the modules registers their classes.
from fewray.algorithms import losses, backbones, heads, cls_heads, classifiers, retrievers  # noqa: E402,F401
from fewray.algorithms import necks, selfsup, fewshot_det  # noqa: E402,F401

__all__ = ["BACKBONES", "HEADS", "CLASSIFIERS", "DETECTORS", "HOOKS", "LOSSES", "NECKS", "RETRIEVERS", "SELFSUP",
           "build_classifier",
           "model_class"]
