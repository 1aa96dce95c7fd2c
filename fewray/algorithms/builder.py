"""Registries of backbones, necks, heads, classifiers, self-supervised models, retrievers and losses, and
:func:`build_classifier` / :func:`model_class` for a ``model:`` config section."""

from __future__ import annotations

from typing import Any

from fewray.core.registry import Registry

BACKBONES = Registry("backbone")
HEADS = Registry("head")
CLASSIFIERS = Registry("classifier")
LOSSES = Registry("loss")
RETRIEVERS = Registry("retriever")
NECKS = Registry("neck")
SELFSUP = Registry("self-supervised model")
#: detectors (Faster R-CNN, TFA, FSCE): built from the whole ``model:`` section (:mod:`fewray.algorithms.fewshot_det`)
DETECTORS = Registry("detector")
#: training hooks called every step with the model (FSCE's ``ContrastiveLossDecayHook``); ``train.hooks``
HOOKS = Registry("training hook")


def model_class(type_name: str) -> type:
    """The class a ``model.type`` names: a few-shot classifier (:data:`CLASSIFIERS`), a self-supervised model
    (:data:`SELFSUP`) or a detector (:data:`DETECTORS`).

    Raises:
        ConfigError: ``unknown classifier type 'X' (registered: ...)``.
    """
    if isinstance(type_name, str) and type_name in SELFSUP:
        return SELFSUP.get(type_name)
    if isinstance(type_name, str) and type_name in DETECTORS:
        return DETECTORS.get(type_name)
    return CLASSIFIERS.get(type_name)


def init_file_args(type_name: str) -> tuple[str, ...]:
    """The arguments of model type ``type_name`` that read files when it is built (e.g. MetaBaseline's
    ``pretrained_backbone``); ``()`` for a type without any, or one that is not registered."""
    from fewray.core.errors import ConfigError

    try:
        return tuple(getattr(model_class(type_name), "init_file_args", ()))
    except ConfigError:  # an unknown type: reported where the config is validated
        return ()


def build_classifier(model_cfg: Any, validate_only: bool = False, for_checkpoint: bool = False):
    """Build the classifier described by a ``model:`` config section.

    Args:
        model_cfg: a :class:`~fewray.platform.config.ModelConfig` or a dict with
            ``type``, ``backbone`` and ``head`` (each ``{type: ..., **kwargs}``).
        validate_only (bool): check type names and keyword arguments without building tensors.
        for_checkpoint (bool): the weights will come from a checkpoint: skip the classifier's arguments
            that load weights from files at construction (its ``init_file_args``, e.g. MetaBaseline's
            ``pretrained_backbone``) and the backbone's ``pretrained`` weights, so a model can be rebuilt where
            those files are not (another Ray node).

    Returns:
        The classifier ``nn.Module`` (or None when ``validate_only``).

    Raises:
        ConfigError: unknown type, unknown argument or wrong argument type, naming the key.
    """
    from fewray.core.registry import validate_kwargs

    cfg = model_cfg if isinstance(model_cfg, dict) else model_cfg.model_dump()
    for whole in (SELFSUP, DETECTORS):  # built from its config dict as a whole
        if isinstance(cfg.get("type"), str) and cfg["type"] in whole:
            skipped = init_file_args(cfg["type"]) + tuple(getattr(whole.get(cfg["type"]), "init_only_args", ()))
            kwargs = {k: v for k, v in cfg.items() if not (for_checkpoint and k in skipped)}
            if validate_only and whole is DETECTORS:
                validate_kwargs(whole.get(cfg["type"]), {k: v for k, v in kwargs.items() if k != "type"}, "model")
                return None
            model = whole.build(kwargs, "model")
            return None if validate_only else model
    extra = {k: v for k, v in cfg.items() if k not in ("type", "backbone", "head")}
    cls = CLASSIFIERS.get(cfg["type"])
    for registry, key in ((BACKBONES, "backbone"), (HEADS, "head")):
        sub = cfg.get(key) or {}
        if "type" not in sub:
            from fewray.core.errors import ConfigError

            raise ConfigError(f"config key 'model.{key}.type' is missing")
        validate_kwargs(registry.get(sub["type"]), {k: v for k, v in sub.items() if k != "type"}, f"model.{key}")
    validate_kwargs(cls, extra, "model", skip={"backbone", "head"})
    if validate_only:
        return None
    backbone_cfg = cfg["backbone"]
    if for_checkpoint:
        extra = {k: v for k, v in extra.items() if k not in init_file_args(cfg["type"])}
        if backbone_cfg.get("pretrained"):  # the checkpoint holds the weights: no file to read (another node)
            backbone_cfg = {**backbone_cfg, "pretrained": False}
    backbone = BACKBONES.build(backbone_cfg, "model.backbone")
    head = HEADS.build(cfg["head"], "model.head")
    return CLASSIFIERS.build({"type": cfg["type"], **extra}, "model", backbone=backbone, head=head)
