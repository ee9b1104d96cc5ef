"""Encoder registry: ``@register_model`` factories, ``build_model`` and ``list_models``.

The set of encoders is open (one file per method), so it is a registry in the
style of timm: each method file decorates its factories with ``@register_model``
and ``reid/models/__init__.py`` imports the method files explicitly, so the
registry is complete as soon as ``reid.models`` is imported.

A built model carries ``build_spec = {"name": ..., "kwargs": {...}}`` (JSON
types only): a checkpoint's metadata can rebuild the bare encoder with
``build_model_from_spec`` and then load its state dict.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}

F = TypeVar("F", bound=Callable[..., nn.Module])


class UnknownModelError(KeyError):
    """``build_model`` got a name that no method file registered."""

    def __str__(self) -> str:
        return str(self.args[0])


def register_model(fn: F) -> F:
    """Register an encoder factory under its function name (must be unique)."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is registered twice ({_MODELS[name].__module__})")
    _MODELS[name] = fn
    return fn


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted registered names, optionally filtered by a shell pattern (``"*_resnet18"``)."""
    names = sorted(_MODELS)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def is_model(name: str) -> bool:
    """Whether ``name`` is a registered encoder."""
    return name in _MODELS


def _jsonable(value: Any) -> Any:
    """Tuples -> lists (recursively); anything else must already be JSON-serialisable."""
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if hasattr(value, "__fspath__"):
        return str(value)
    return value


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered encoder ``name`` with ``kwargs`` and record ``build_spec``.

    Raises ``UnknownModelError`` (a ``KeyError``) listing the available names.
    """
    if name not in _MODELS:
        raise UnknownModelError(
            f"unknown model {name!r}; available models: {', '.join(list_models())}"
        )
    model = _MODELS[name](**kwargs)
    spec = {"name": name, "kwargs": _jsonable(kwargs)}
    try:
        json.dumps(spec)
    except TypeError as exc:
        raise TypeError(f"build_model({name!r}) kwargs must be JSON-serialisable: {exc}") from None
    model.build_spec = spec
    return model


def build_model_from_spec(spec: Mapping[str, Any], *, pretrained: Any = None) -> nn.Module:
    """Rebuild an encoder from its ``build_spec`` (weights come from the checkpoint).

    ``pretrained`` replaces the recorded value (default ``None``: no ImageNet load,
    since the checkpoint's state dict overwrites every weight anyway).
    """
    kwargs = dict(spec.get("kwargs", {}))
    kwargs.pop("pretrained", None)
    model = build_model(spec["name"], pretrained=pretrained, **kwargs)
    model.build_spec = {"name": spec["name"], "kwargs": _jsonable(spec.get("kwargs", {}))}
    return model
