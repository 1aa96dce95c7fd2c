"""Model utilities shared by classifiers (fast weights for MAML)."""

from fewray.algorithms.utils.fast_weights import (
    adapt,
    batch_norm_batch_stats,
    functional_forward,
    gradient_step,
    trainable_params,
)

__all__ = ["adapt", "batch_norm_batch_stats", "functional_forward", "gradient_step", "trainable_params"]
