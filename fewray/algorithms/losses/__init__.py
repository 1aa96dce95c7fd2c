"""Losses with mmfewshot's arguments (``reduction``, ``loss_weight``; per call ``weight``, ``avg_factor``)."""

from fewray.algorithms.losses.cross_entropy_loss import CrossEntropyLoss
from fewray.algorithms.losses.mse_loss import MSELoss
from fewray.algorithms.losses.nll_loss import NLLLoss
from fewray.algorithms.losses.nt_xent_loss import NTXentLoss
from fewray.algorithms.losses.supervised_contrastive_loss import SupervisedContrastiveLoss
from fewray.algorithms.losses.utils import weight_reduce_loss

__all__ = ["CrossEntropyLoss", "MSELoss", "NLLLoss", "NTXentLoss", "SupervisedContrastiveLoss", "weight_reduce_loss"]
