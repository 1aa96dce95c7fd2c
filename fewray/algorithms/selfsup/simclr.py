"""SimCLR: A Simple Framework for Contrastive Learning of Visual Representations (Chen et al., ICML 2020)."""

# no ``from __future__ import annotations``: the registry validates config values against these annotations
from typing import Any, Sequence

import torch
import torch.distributed as dist
from torch import nn

from fewray.algorithms.builder import SELFSUP
from fewray.algorithms.losses.nt_xent_loss import NTXentLoss
from fewray.algorithms.selfsup.base import BaseSelfSupervisor, Inputs
from fewray.core.errors import ConfigError


class _GatherWithGrad(torch.autograd.Function):
    """``all_gather`` along dim 0 whose backward sums every rank's gradient of its slice (any backend).

    Each rank computes the same loss of the gathered batch; summing the ranks' gradients of a rank's slice
    gives ``world_size`` times the gradient of that loss, and DDP's mean over ranks turns the parameter
    gradients into exactly the gradient of the loss of the whole global batch.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.size = dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.size:(ctx.rank + 1) * ctx.size]


def gather_batch(x: torch.Tensor) -> torch.Tensor:
    """``x`` ``(B, D)`` of every rank concatenated in rank order ``(world * B, D)``, differentiably; ``x`` itself
    outside a multi-process ``torch.distributed`` group. Every rank must give the same ``B``."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


@SELFSUP.register
class SimCLR(BaseSelfSupervisor):
    """SimCLR: two augmented views of each image, a shared backbone and projection MLP, and the NT-Xent loss.

    From "A Simple Framework for Contrastive Learning of Visual Representations" (Chen, Kornblith, Norouzi and
    Hinton, ICML 2020, https://arxiv.org/abs/2002.05709); mmpretrain's ``SimCLR``. Each image ``x`` is
    augmented twice (random crop, flip, colour distortion: :mod:`fewray.data.multiview`), the backbone
    ``f`` gives ``h = f(x)``, the projection neck ``g`` gives ``z = g(h)``, and the head (:class:`~fewray.
    algorithms.losses.NTXentLoss`) asks each view's ``z`` to find its partner among the ``2B - 1`` others.
    After training, ``h`` (the backbone) is the representation; ``g`` is dropped.

    Args:
        backbone (dict | nn.Module): e.g. ``{type: Conv4, in_channels: 1}``.
        neck (dict | nn.Module | None): the projection, normally ``{type: NonLinearNeck, in_channels: D,
            hid_channels: ..., out_channels: ..., num_layers: 2}`` (``D`` = the backbone's feature size);
            None: the loss is computed on the flattened backbone features. Default None.
        head (dict | nn.Module | None): an :class:`~fewray.algorithms.losses.NTXentLoss` (or subclass),
            ``{type: NTXentLoss, temperature: 0.1}``. Default None: ``NTXentLoss(temperature=0.1)``.
        gather_distributed (bool): under a multi-process ``torch.distributed`` group (DDP, Ray Train), gather
            the projections of all ranks so each view's negatives are the whole global batch (mmpretrain's
            GatherLayer; the gradient is that of the global batch's loss). Every rank needs the same batch
            size. Default True.
        target_generator, pretrained, data_preprocessor: see
            :class:`~fewray.algorithms.selfsup.BaseSelfSupervisor`.

    Inputs: the two views as a list ``[view1, view2]`` of float ``(B, C, H, W)`` tensors in ``[0, 1]``
    (mmpretrain's form), or one ``(2B, C, H, W)`` tensor ``torch.cat([view1, view2])`` (rows ``i`` and
    ``B + i`` are the two views of image ``i``). Both views go through the backbone in one pass (batch-norm
    statistics over all ``2B`` images, as mmpretrain). ``B >= 2`` (over all ranks when gathering).

    ``forward(inputs, mode='loss')`` (or ``mode='train'``, or no mode in training mode) ->
    ``{"loss": NT-Xent, "accuracy": the fraction of the 2B views whose most similar other view is their
    partner (detached)}``. ``forward(x, mode='tensor')`` / :meth:`extract_feat` -> backbone features of
    ``x`` ``(N, C, H, W)`` (of ``view1`` for a list).

    Raises:
        ConfigError: a head that is not an NTXentLoss; the errors of the base class.
        ValueError: inputs that are not two views of one shape, an odd ``2B``, ``B < 2``, integer pixels.

    Example::

        >>> import torch
        >>> from fewray.algorithms import SELFSUP
        >>> model = SELFSUP.build({"type": "SimCLR", "backbone": {"type": "Conv4", "in_channels": 1},
        ...     "neck": {"type": "NonLinearNeck", "in_channels": 64, "hid_channels": 128, "out_channels": 64},
        ...     "head": {"type": "NTXentLoss", "temperature": 0.1}})
        >>> view1, view2 = torch.rand(8, 1, 28, 28), torch.rand(8, 1, 28, 28)
        >>> out = model([view1, view2])            # training mode: the losses
        >>> sorted(out), out["loss"].shape
        (['accuracy', 'loss'], torch.Size([]))
        >>> out["loss"].backward()
        >>> model.eval()(view1).shape              # eval mode: backbone features
        torch.Size([8, 64])
    """

    #: the training task the runtime streams for this model (two augmented views per image, no labels)
    train_task = "multiview"

    def __init__(
        self,
        backbone: dict[str, Any] | nn.Module,
        neck: dict[str, Any] | nn.Module | None = None,
        head: dict[str, Any] | nn.Module | None = None,
        gather_distributed: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(backbone, neck=neck, head=head if head is not None else NTXentLoss(0.1), **kwargs)
        if not isinstance(self.head, NTXentLoss):
            raise ConfigError(f"config key 'model.head': SimCLR's head is the contrastive loss (type: NTXentLoss), "
                              f"got {type(self.head).__name__}")
        self.gather_distributed = gather_distributed

    def extract_feat(self, inputs: Inputs) -> torch.Tensor:
        """Backbone features of images ``(N, C, H, W)``; of the first view for a list of views (mmpretrain)."""
        if isinstance(inputs, (list, tuple)):
            inputs = inputs[0]
        return super().extract_feat(inputs)

    @staticmethod
    def split_views(inputs: Inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """``(view1, view2)`` from ``[view1, view2]`` or ``torch.cat([view1, view2])``.

        Raises:
            ValueError: not two views of one ``(B, C, H, W)`` shape.
        """
        if isinstance(inputs, Sequence) and not torch.is_tensor(inputs):
            if len(inputs) != 2 or not all(torch.is_tensor(v) for v in inputs):
                raise ValueError(f"SimCLR takes two views [view1, view2], got {len(inputs)} items")
            v1, v2 = inputs
        elif torch.is_tensor(inputs) and inputs.dim() == 4:
            if inputs.shape[0] % 2:
                raise ValueError(f"SimCLR takes torch.cat([view1, view2]) (2B, C, H, W): an even first dimension, "
                                 f"got {tuple(inputs.shape)}")
            v1, v2 = inputs.chunk(2)
        else:
            shape = tuple(inputs.shape) if torch.is_tensor(inputs) else type(inputs).__name__
            raise ValueError(f"SimCLR takes two views [view1, view2] of (B, C, H, W) or one (2B, C, H, W) tensor, "
                             f"got {shape}")
        if v1.shape != v2.shape or v1.dim() != 4:
            raise ValueError(f"SimCLR's two views must be (B, C, H, W) of one shape, got {tuple(v1.shape)} and "
                             f"{tuple(v2.shape)}")
        return v1, v2

    def loss(self, inputs: Inputs, data_samples: Any = None) -> dict[str, torch.Tensor]:
        """``{"loss", "accuracy"}`` of a batch of view pairs (see the class docstring); ``data_samples`` unused."""
        v1, v2 = self.split_views(inputs)
        x = self.backbone(self.preprocess(torch.cat([v1, v2])))
        z = self.neck(x) if self.with_neck else x.flatten(1)
        z1, z2 = z[: v1.shape[0]], z[v1.shape[0]:]
        if self.gather_distributed:
            z1, z2 = gather_batch(z1), gather_batch(z2)
        loss = self.head(z1, z2)
        with torch.no_grad():
            scores, target = self.head.logits(z1.detach(), z2.detach())
            accuracy = (scores.argmax(1) == target).float().mean()
        return {"loss": loss, "accuracy": accuracy}
