"""Fast weights for any ``nn.Module``: run it with a params dict and adapt that dict by gradient steps.

This replaces mmfewshot's ``convert_maml_module`` (which rewrites every layer to take fast weights) with
:func:`torch.func.functional_call`, so MAML works with any backbone and head unchanged.

Example::

    >>> import torch
    >>> import torch.nn.functional as F
    >>> from fewray.algorithms.utils.fast_weights import adapt, functional_forward, trainable_params
    >>> _ = torch.manual_seed(0)
    >>> net = torch.nn.Linear(4, 2)
    >>> params = trainable_params(net)
    >>> x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    >>> loss_fn = lambda p: F.cross_entropy(functional_forward(net, p, x), y)
    >>> fast = adapt(loss_fn, params, steps=3, lr=0.1, first_order=True)
    >>> bool(loss_fn(fast) < loss_fn(params))
    True
    >>> torch.equal(net.weight, params["weight"])   # the module itself is unchanged
    True
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

#: the BatchNorm layers whose running statistics a task adaptation must not touch
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)

Params = dict[str, torch.Tensor]


def trainable_params(module: nn.Module) -> Params:
    """``{name: parameter}`` of the parameters of ``module`` that require grad (the initial fast weights)."""
    return {k: p for k, p in module.named_parameters() if p.requires_grad}


def functional_forward(module: nn.Module, params: Params, *args: Any, buffers: Params | None = None, **kwargs: Any):
    """``module(*args, **kwargs)`` computed with ``params`` in place of its parameters.

    Args:
        module: any module; params: a subset of its named parameters (the rest keep their values).
        buffers: buffers to use instead of the module's own, e.g. clones so batch-norm running statistics
            are not updated; default clones of all buffers (the module's state is never modified).
    """
    if buffers is None:
        buffers = {k: b.clone() for k, b in module.named_buffers()}
    return functional_call(module, {**buffers, **params}, args, kwargs)


def gradient_step(loss: torch.Tensor, params: Params, lr: float, first_order: bool = False) -> Params:
    """One SGD step on ``params``: ``p - lr * dloss/dp``.

    Args:
        loss: scalar computed from ``params``.
        params: the current fast weights.
        lr: inner learning rate.
        first_order: drop the second-order terms (the gradient is treated as a constant, FOMAML);
            otherwise the graph of the gradient is kept so an outer loss can differentiate through the step.

    Parameters that ``loss`` does not use get a zero step.
    """
    names = list(params)
    create_graph = not first_order and torch.is_grad_enabled()
    grads = torch.autograd.grad(loss, [params[k] for k in names], create_graph=create_graph, allow_unused=True)
    out = {}
    for k, g in zip(names, grads):
        if g is None:
            out[k] = params[k]
        else:
            out[k] = params[k] - lr * (g if create_graph else g.detach())
    return out


def adapt(loss_fn: Callable[[Params], torch.Tensor], params: Params, steps: int, lr: float,
          first_order: bool = False) -> Params:
    """``steps`` gradient steps of ``loss_fn(params)`` from ``params``; returns the fast weights.

    Raises:
        ValueError: ``steps < 0``.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    for _ in range(steps):
        params = gradient_step(loss_fn(params), params, lr, first_order)
    return params


@contextlib.contextmanager
def batch_norm_batch_stats(module: nn.Module) -> Iterator[None]:
    """Inside the block every batch-norm layer of ``module`` normalises with the current batch's statistics.

    (Training mode for batch-norm only; dropout and other layers keep their mode.) MAML uses this at
    meta-test, as Finn et al. do: transductive batch statistics instead of running averages.
    """
    bns = [m for m in module.modules() if isinstance(m, BATCH_NORMS)]
    modes = [m.training for m in bns]
    try:
        for m in bns:
            m.train(True)
        yield
    finally:
        for m, mode in zip(bns, modes):
            m.train(mode)
