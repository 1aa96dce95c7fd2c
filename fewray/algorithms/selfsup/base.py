"""BaseSelfSupervisor: backbone + neck + head trained without labels (mmpretrain's ``BaseSelfSupervisor``)."""

# no ``from __future__ import annotations``: the registry validates config values against these annotations
from abc import ABCMeta, abstractmethod
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from fewray.algorithms.builder import BACKBONES, HEADS, LOSSES, NECKS
from fewray.core.errors import ConfigError

Inputs = torch.Tensor | Sequence[torch.Tensor]

#: the forward modes and what each returns
MODES = ("tensor", "extract", "loss", "train")


class SelfSupDataPreprocessor(nn.Module):
    """Per-channel standardisation ``(x - mean) / std`` of float images in ``[0, 1]`` (each view alike).

    fewray's runtime hands models floats in ``[0, 1]`` (``uint8 / 255``), so ``mean`` and ``std`` are on that
    scale (ImageNet: ``[0.485, 0.456, 0.406]``, ``[0.229, 0.224, 0.225]``), unlike mmpretrain's 0-255 ones.
    A backbone that standardises its input itself (:class:`~fewray.algorithms.backbones.TorchvisionResNet`)
    needs none.

    Args:
        mean (list[float]): one value per channel. std (list[float]): one positive value per channel.

    Raises:
        ConfigError: ``mean`` and ``std`` of different lengths, or a ``std <= 0``.

    Example::

        >>> pre = SelfSupDataPreprocessor(mean=[0.5], std=[0.25])
        >>> pre(torch.ones(1, 1, 2, 2))[0, 0, 0]
        tensor([2., 2.])
    """

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        if len(mean) != len(std) or not mean:
            raise ConfigError(f"config key 'model.data_preprocessor': mean and std need one value per channel, got "
                              f"{len(mean)} and {len(std)}")
        if min(std) <= 0:
            raise ConfigError(f"config key 'model.data_preprocessor.std': every value must be > 0, got {list(std)}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised ``x`` ``(N, C, H, W)``."""
        return (x - self.mean) / self.std


def _module(value: Any, registries: tuple, where: str) -> nn.Module | None:
    """``value`` itself if a module (or None), else built from its ``{type: ...}`` dict by the first registry
    of ``registries`` that knows the type."""
    if value is None or isinstance(value, nn.Module):
        return value
    if not isinstance(value, dict) or "type" not in value:
        raise ConfigError(f"config key '{where}.type' is missing")
    for registry in registries:
        if isinstance(value["type"], str) and value["type"] in registry:
            return registry.build(value, where)
    known = "; ".join(f"{r.name} types: {', '.join(r.list()) or 'none'}" for r in registries)
    raise ConfigError(f"config key '{where}.type': unknown type {value['type']!r} ({known})")


def _depth_unit(name: str) -> str:
    """The unit of a backbone parameter name for :meth:`BaseSelfSupervisor.get_layer_depth`: ``child.i`` when the
    parameter lies in element ``i`` of a sequence child (``layers.0.0.weight`` -> ``layers.0``), else ``child``."""
    parts = name.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 and parts[1].isdigit() else parts[0]


class BaseSelfSupervisor(nn.Module, metaclass=ABCMeta):
    """Base of self-supervised models (mmpretrain's ``BaseSelfSupervisor``): a backbone trained by a pretext loss.

    The backbone is what such a model is for: after training it is used on its own (as a few-shot
    classifier's backbone, or frozen, for linear or prototype evaluation); the neck and head serve the loss.

    Args:
        backbone (dict | nn.Module): ``{type: Conv4, ...}`` built through :data:`~fewray.algorithms.BACKBONES`,
            or a module ``(N, C, H, W) -> features``.
        neck (dict | nn.Module | None): built through :data:`~fewray.algorithms.NECKS`. Default None.
        head (dict | nn.Module | None): what computes the loss from the neck's output; a ``{type: ...}`` is
            looked up in :data:`~fewray.algorithms.HEADS`, then in :data:`~fewray.algorithms.LOSSES` (a loss
            with no parameters serves as a head, as in mmpretrain's single registry). Default None.
        target_generator (nn.Module | None): a module making the targets of the pretext task (mmpretrain's HOG,
            CLIP or DALL-E targets); fewray registers none, so only a module is accepted. Default None.
        pretrained (str | None): weights of the WHOLE model to start from: a ``.pt``/``.pth`` state dict of
            this model, a fewray ``checkpoint.pt`` (its ``model`` entry), a checkpoint directory or a
            ``train_result.json``. Read with ``weights_only=True`` (a file holding Python objects is refused);
            the keys and shapes must match exactly. Loaded at the end of construction. Default None.
        data_preprocessor (dict | nn.Module | None): applied to every view before the backbone:
            ``{mean: [...], std: [...]}`` builds a :class:`SelfSupDataPreprocessor`; a module is used as it
            is; None: the inputs go to the backbone unchanged. Default None.

    ``forward(inputs, data_samples=None, mode=None)``:
        - ``mode='tensor'`` (alias ``'extract'``): :meth:`extract_feat`, the backbone's features.
        - ``mode='loss'`` (alias ``'train'``, fewray's training call): :meth:`loss`, a dict of losses whose
          ``loss*`` entries the runtime sums.
        - ``mode=None``: torchvision's convention, ``'loss'`` in training mode and ``'tensor'`` in eval mode
          (mmpretrain's default is ``'tensor'``).

    Layer-wise learning-rate decay: :meth:`get_layer_depth`.

    Raises:
        ConfigError: a sub-config without ``type``, an unknown type or argument (naming ``model.<part>``).
        CheckpointError: ``pretrained`` missing, unreadable, holding Python objects, or not fitting the model
            (one line naming the file and the first mismatched key).
    """

    #: arguments that load weights from files (skipped when a checkpoint provides the weights)
    init_file_args = ("pretrained",)
    #: the backbone stays frozen when the trained model is evaluated (features are computed once)
    frozen_backbone_at_test = True

    def __init__(
        self,
        backbone: dict[str, Any] | nn.Module,
        neck: dict[str, Any] | nn.Module | None = None,
        head: dict[str, Any] | nn.Module | None = None,
        target_generator: nn.Module | None = None,
        pretrained: str | None = None,
        data_preprocessor: dict[str, Any] | nn.Module | None = None,
    ) -> None:
        super().__init__()
        if isinstance(data_preprocessor, dict):
            from fewray.core.registry import validate_kwargs

            data_preprocessor = SelfSupDataPreprocessor(
                **validate_kwargs(SelfSupDataPreprocessor, data_preprocessor, "model.data_preprocessor"))
        if target_generator is not None and not isinstance(target_generator, nn.Module):
            raise ConfigError("config key 'model.target_generator': fewray registers no target generators; "
                              "pass a module (or leave it out)")
        self.data_preprocessor = data_preprocessor
        self.backbone = _module(backbone, (BACKBONES,), "model.backbone")
        self.neck = _module(neck, (NECKS,), "model.neck")
        self.head = _module(head, (HEADS, LOSSES), "model.head")
        self.target_generator = target_generator
        if pretrained is not None:
            self.load_pretrained(pretrained)

    @property
    def with_neck(self) -> bool:
        """Whether the model has a neck."""
        return getattr(self, "neck", None) is not None

    @property
    def with_head(self) -> bool:
        """Whether the model has a head."""
        return getattr(self, "head", None) is not None

    @property
    def with_target_generator(self) -> bool:
        """Whether the model has a target generator."""
        return getattr(self, "target_generator", None) is not None

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` through the data preprocessor (if any), after checking it is a float image batch.

        Raises:
            ValueError: not a 4-D tensor, or integer pixels (convert with ``x.float() / 255``).
        """
        if not torch.is_tensor(x) or x.dim() != 4:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"{type(self).__name__} expects images (N, C, H, W), got {shape}")
        if not x.is_floating_point():
            raise ValueError(f"{type(self).__name__} expects float images in [0, 1], got {x.dtype} "
                             f"(convert with x.float() / 255)")
        return self.data_preprocessor(x) if self.data_preprocessor is not None else x

    def extract_feat(self, inputs: torch.Tensor) -> torch.Tensor:
        """The backbone's features of images ``(N, C, H, W)`` (floats in ``[0, 1]``)."""
        return self.backbone(self.preprocess(inputs))

    def forward(self, inputs: Inputs, data_samples: Any = None, mode: str | None = None) -> Any:
        """Dispatch on ``mode`` (see the class docstring).

        Raises:
            ValueError: an unknown mode.
        """
        if mode is None:
            mode = "loss" if self.training else "tensor"
        if mode in ("tensor", "extract"):
            return self.extract_feat(inputs)
        if mode in ("loss", "train"):
            return self.loss(inputs, data_samples)
        raise ValueError(f"unknown forward mode {mode!r} ({', '.join(MODES)})")

    @abstractmethod
    def loss(self, inputs: Inputs, data_samples: Any = None) -> dict[str, torch.Tensor]:
        """The losses of a batch: ``{"loss": ..., ...}`` (each ``loss*`` entry is summed by the runtime)."""

    def get_layer_depth(self, param_name: str) -> tuple[int, int]:
        """``(layer_depth, max_depth)`` of a parameter, for layer-wise learning-rate decay (mmpretrain's helper).

        A decay rate ``d`` scales the learning rate of a parameter by ``d ** (max_depth - 1 - layer_depth)``
        (mmpretrain's ``LearningRateDecayOptimWrapperConstructor``): the deepest units keep the base rate.

        fewray's rule: a backbone with its own ``get_layer_depth(param_name, prefix)`` (mmpretrain's backbone
        API) answers for itself, called with ``prefix='backbone.'``. Otherwise the backbone's parameters are
        grouped into *units*: the backbone child a parameter lies in, or, for a child that is a sequence of
        blocks, the block (``backbone.layers.2.0.weight`` -> ``layers.2``; ``_blocks.7``, ``layer1.0``; ResNet12's
        ``layer1`` is one block). The ``n`` units are numbered ``0..n-1`` in the order their parameters are
        registered (the forward order of fewray's backbones), so the stem is 0 as in mmpretrain, and every
        parameter outside the backbone (neck, head) gets ``n``. ``max_depth = n + 1``.

        Conv4 (``layers.0`` .. ``layers.3``): depths 0, 1, 2, 3, the neck and head 4, ``max_depth`` 5.

        Args:
            param_name (str): a name from ``model.named_parameters()`` (of this model, not a DDP wrapper).

        Raises:
            ValueError: ``param_name`` is not a parameter of this model.

        Example::

            >>> from fewray.algorithms.selfsup import SimCLR
            >>> model = SimCLR(backbone={"type": "Conv4", "in_channels": 1}, neck={"type": "NonLinearNeck",
            ...                "in_channels": 64, "hid_channels": 64, "out_channels": 32})
            >>> model.get_layer_depth("backbone.layers.0.0.weight"), model.get_layer_depth("neck.fc0.weight")
            ((0, 5), (4, 5))
        """
        if hasattr(self.backbone, "get_layer_depth"):
            return self.backbone.get_layer_depth(param_name, "backbone.")
        names = [n for n, _ in self.named_parameters()]
        if param_name not in names:
            raise ValueError(f"'{param_name}' is not a parameter of {type(self).__name__}")
        units = list(dict.fromkeys(_depth_unit(n) for n, _ in self.backbone.named_parameters()))
        max_depth = len(units) + 1
        if not param_name.startswith("backbone."):
            return max_depth - 1, max_depth
        return units.index(_depth_unit(param_name[len("backbone."):])), max_depth

    def load_pretrained(self, path: str | Path) -> None:
        """Load the whole model's weights from ``path`` (see ``pretrained`` in the class docstring).

        Raises:
            CheckpointError: missing, unreadable, Python objects, not a state dict, or keys/shapes that differ
                (naming the file and the first mismatched key).
        """
        from fewray.algorithms.utils.weights import load_state_checked, load_weights, resolve_checkpoint

        p = resolve_checkpoint(Path(path).expanduser())
        state = load_weights(p)
        if isinstance(state, dict) and isinstance(state.get("model"), dict):
            state = state["model"]  # a fewray checkpoint
        load_state_checked(self, state, f"pretrained weights {p} do not fit {type(self).__name__}",
                           f"pretrained weights {p} are not a state dict (the file holds a {{type}})")
