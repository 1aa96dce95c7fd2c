"""A decorator registry that maps config ``type:`` names to classes, with argument validation.

Like timm's ``register_model``: ``@BACKBONES.register`` adds a class under its
name; ``BACKBONES.build({"type": "Conv4", "in_channels": 1})`` validates the
keyword arguments against the class signature (unknown key or wrong type is a
:class:`~fewray.core.errors.ConfigError` naming the key) and instantiates it.

Example::

    >>> from fewray.algorithms import BACKBONES
    >>> BACKBONES.list()
    ['Conv4', ...]
    >>> net = BACKBONES.build({"type": "Conv4", "in_channels": 1})
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, TypeVar

import pydantic

from fewray.core.errors import ConfigError

T = TypeVar("T")


class Registry:
    """A named mapping from ``type`` strings to classes.

    Args:
        name (str): what the registry holds, used in error messages ("backbone").
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._classes: dict[str, type] = {}

    def register(self, cls: type[T] | None = None, *, name: str | None = None) -> Any:
        """Register ``cls`` under ``name`` (default: the class name). Usable as a decorator.

        Raises:
            ValueError: if the name is already taken by another class.
        """

        def add(c: type[T]) -> type[T]:
            key = name or c.__name__
            if key in self._classes and self._classes[key] is not c:
                raise ValueError(f"{self.name} '{key}' is already registered")
            self._classes[key] = c
            return c

        return add(cls) if cls is not None else add

    def get(self, key: str) -> type:
        """Return the class registered as ``key``.

        Raises:
            ConfigError: if no class is registered under ``key``.
        """
        if not isinstance(key, str):
            raise ConfigError(f"a {self.name} type must be a name like '{(self.list() or ['X'])[0]}', got {key!r}")
        if key not in self._classes:
            raise ConfigError(
                f"unknown {self.name} type '{key}' (registered: {', '.join(self.list()) or 'none'})"
            )
        return self._classes[key]

    def list(self) -> list[str]:
        """Names of all registered classes, sorted."""
        return sorted(self._classes)

    def __contains__(self, key: str) -> bool:
        return key in self._classes

    def build(self, cfg: dict[str, Any], where: str = "", **extra: Any) -> Any:
        """Instantiate ``cfg['type']`` with the remaining keys as validated keyword arguments.

        Args:
            cfg (dict): ``{"type": name, **kwargs}``.
            where (str): the config path of ``cfg`` for error messages, e.g. ``"model.backbone"``.
            **extra: keyword arguments supplied by code (e.g. a built backbone), not validated.

        Raises:
            ConfigError: missing ``type``, unknown type, unknown key or a value of the wrong type.
        """
        where = where or self.name
        if not isinstance(cfg, dict) or "type" not in cfg:
            raise ConfigError(f"config key '{where}.type' is missing")
        cls = self.get(cfg["type"])
        kwargs = {k: v for k, v in cfg.items() if k != "type"}
        validated = validate_kwargs(cls, kwargs, where, skip=set(extra))
        return cls(**validated, **extra)


def validate_kwargs(fn: Callable, kwargs: dict[str, Any], where: str, skip: set[str] = frozenset()) -> dict:
    """Validate ``kwargs`` against the annotated signature of ``fn`` (a class or function) with pydantic.

    Returns the validated (coerced) keyword arguments.

    Raises:
        ConfigError: naming ``where.<key>`` for an unknown key, a missing required key or a wrong type.
    """
    fields: dict[str, Any] = {}
    for p in _parameters(fn):
        if p.name in ("self", *skip) or p.name in fields:
            continue
        ann = p.annotation if p.annotation is not inspect.Parameter.empty else Any
        default = p.default if p.default is not inspect.Parameter.empty else ...
        fields[p.name] = (ann, default)
    model = pydantic.create_model(
        f"{getattr(fn, '__name__', 'Args')}Args",
        __config__=pydantic.ConfigDict(extra="forbid", arbitrary_types_allowed=True),
        **fields,
    )
    try:
        obj = model.model_validate(kwargs)
    except pydantic.ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where)) from None
    return {k: getattr(obj, k) for k in kwargs}


def _parameters(fn: Callable) -> list[inspect.Parameter]:
    """The keyword parameters ``fn`` accepts. A class whose ``__init__`` passes ``**kwargs`` on to its base class
    accepts the base's parameters too (the subclass's own come first and win), so a subclass states only what it
    adds or changes, and an unknown key is still an error."""
    params: list[inspect.Parameter] = []
    for owner in (fn.__mro__ if inspect.isclass(fn) else (fn,)):
        init = owner.__init__ if inspect.isclass(fn) else owner
        if inspect.isclass(fn) and "__init__" not in owner.__dict__:
            continue
        own = list(inspect.signature(init).parameters.values())
        params += [p for p in own if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if not any(p.kind is p.VAR_KEYWORD for p in own) or owner is object:
            break
    return params


def format_validation_error(exc: pydantic.ValidationError, where: str = "") -> str:
    """One line naming the first failing key of a pydantic error, e.g. ``config key 'train.lr': ...``."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    key = f"{where}.{loc}" if where and loc else (where or loc)
    if err["type"] == "extra_forbidden":
        return f"unknown config key '{key}'"
    if err["type"] == "missing":
        return f"config key '{key}' is required"
    got = err.get("input")
    return f"config key '{key}': {err['msg']} (got {got!r})"
