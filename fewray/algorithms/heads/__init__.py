"""Few-shot heads: turn support and query features into losses (training) and scores (meta-test)."""

from fewray.algorithms.heads.prototype_head import PrototypeHead

__all__ = ["PrototypeHead"]
