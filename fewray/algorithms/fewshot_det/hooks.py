"""Training hooks of the detectors: called by the runtime before every step with the model under training."""

from __future__ import annotations

from torch import nn

from fewray.algorithms.builder import HOOKS


@HOOKS.register
class ContrastiveLossDecayHook:
    """FSCE's decay of the contrastive loss weight (Sun et al., CVPR 2021, https://arxiv.org/abs/2103.05950;
    mmfewshot's ``ContrastiveLossDecayHook``): after each step of ``decay_steps`` the weight of every
    :class:`~fewray.algorithms.losses.SupervisedContrastiveLoss` in the model is multiplied by ``decay_rate``.
    The scale is computed from the step alone, so a resumed run continues with the same weight.

    Config: ``train.hooks: [{type: ContrastiveLossDecayHook, decay_steps: [6000, 10000], decay_rate: 0.5}]``.

    Args:
        decay_steps (list[int]): steps after which the weight decays. decay_rate (float): the factor (0.5).

    Example::

        >>> from fewray.algorithms.losses import SupervisedContrastiveLoss
        >>> model = nn.Sequential(SupervisedContrastiveLoss())
        >>> hook = ContrastiveLossDecayHook(decay_steps=[10, 20], decay_rate=0.5)
        >>> [hook.before_train_iter(model, s) or model[0].weight_scale for s in (0, 10, 25)]
        [1.0, 0.5, 0.25]
    """

    def __init__(self, decay_steps: list[int], decay_rate: float = 0.5) -> None:
        self.decay_steps, self.decay_rate = sorted(int(s) for s in decay_steps), float(decay_rate)

    def before_train_iter(self, model: nn.Module, step: int) -> None:
        """Set the contrastive losses' ``weight_scale`` for training step ``step`` (0-based)."""
        from fewray.algorithms.losses.supervised_contrastive_loss import SupervisedContrastiveLoss

        scale = self.decay_rate ** sum(step >= s for s in self.decay_steps)
        for m in model.modules():
            if isinstance(m, SupervisedContrastiveLoss):
                m.weight_scale = scale
