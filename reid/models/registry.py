"""Encoders composed from a head and a backbone: ``build_model`` and ``list_models``.

Two registries, in the style of fast-reid's meta-architectures and backbones:

* heads (``@register_head`` on a ``ReIDEncoder`` subclass, one file per method,
  imported in ``reid/models/__init__.py``): the method's modules on top of any
  backbone, built as ``cls(backbone, input_size=..., **head_kwargs)``;
* backbones (``@register_backbone``, see ``reid.models.backbones``).

Every head is composed with every backbone that provides what the head
``requires``: model ``"<head>_<backbone>"`` (``"aff_resnet34"``); the baseline
head's models are named by the backbone alone (``"resnet50"``). Older names of a
combination stay valid through ``register_alias`` (``"se_resnet50_fusion"``).
``register_model`` registers a stand-alone factory that is not a head on a
registered backbone.

A built model carries ``build_spec = {"name": ..., "kwargs": {...}}`` (JSON
types only, ``name`` as requested): a checkpoint's metadata can rebuild the bare
encoder with ``build_model_from_spec`` and then load its state dict.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from torch import nn

from reid.jsonable import to_jsonable

from .backbones import BACKBONES, build_backbone
from .encoder import ReIDEncoder

E = TypeVar("E", bound=type[ReIDEncoder])
F = TypeVar("F", bound=Callable[..., nn.Module])


class UnknownModelError(KeyError):
    """``build_model`` got a name that is no registered head/backbone combination."""

    def __str__(self) -> str:
        return str(self.args[0])


class UnsupportedBackboneError(UnknownModelError):
    """The head requires a backbone feature (e.g. its stages) that the backbone lacks."""


@dataclass(frozen=True)
class HeadEntry:
    """One registered head: ``encoder(backbone, input_size=..., **kwargs)`` and its needs."""

    name: str
    encoder: type[ReIDEncoder]
    requires: frozenset[str]
    prefix: str

    def supports(self, backbone: str) -> bool:
        return self.requires <= BACKBONES[backbone].provides

    def model_name(self, backbone: str) -> str:
        return f"{self.prefix}{backbone}"

    def build(
        self,
        backbone: str,
        *,
        pretrained: str | Path | None = None,
        last_stride: int = 1,
        input_size: Sequence[int] = (256, 128),
        **head_kwargs: Any,
    ) -> ReIDEncoder:
        """Build ``backbone`` (``pretrained``, ``last_stride``) and this head on it."""
        trunk = build_backbone(backbone, pretrained=pretrained, last_stride=last_stride)
        size = (int(input_size[0]), int(input_size[1]))
        return self.encoder(trunk, input_size=size, **head_kwargs)


class ModelParts(NamedTuple):
    """What a model name resolves to: a head and a backbone (``None`` for a stand-alone model)."""

    head: str | None
    backbone: str | None


HEADS: dict[str, HeadEntry] = {}
_ALIASES: dict[str, ModelParts] = {}
_STANDALONE: dict[str, Callable[..., nn.Module]] = {}


def register_head(
    name: str, *, requires: Iterable[str] = (), prefix: str | None = None
) -> Callable[[E], E]:
    """Register the ``ReIDEncoder`` subclass below as head ``name`` (must be unique).

    Args:
        requires: backbone features the head uses beyond the last feature map
            (``reid.models.backbones.STAGES``); backbones without them are skipped.
        prefix: model names are ``prefix + backbone`` (default ``name + "_"``).
    """

    def decorator(cls: E) -> E:
        if name in HEADS:
            raise ValueError(
                f"head {name!r} is registered twice ({HEADS[name].encoder.__module__})"
            )
        HEADS[name] = HeadEntry(
            name, cls, frozenset(requires), f"{name}_" if prefix is None else prefix
        )
        return cls

    return decorator


def register_alias(alias: str, *, head: str, backbone: str) -> None:
    """Keep an older name of ``head`` on ``backbone`` valid (checkpoints and configs use it)."""
    if alias in _ALIASES:
        raise ValueError(f"model alias {alias!r} is registered twice")
    _ALIASES[alias] = ModelParts(head, backbone)


def register_model(fn: F) -> F:
    """Register a stand-alone encoder factory under its function name (must be unique)."""
    name = fn.__name__
    if name in _STANDALONE or name in _composed():
        raise ValueError(f"model {name!r} is registered twice ({fn.__module__})")
    _STANDALONE[name] = fn
    return fn


def _composed() -> dict[str, ModelParts]:
    """Every supported head/backbone combination by name, plus the aliases."""
    table: dict[str, ModelParts] = {}
    for head in HEADS.values():
        for backbone in BACKBONES:
            if head.supports(backbone):
                name = head.model_name(backbone)
                if name in table:
                    raise ValueError(f"model name {name!r} is composed twice: {table[name]}")
                table[name] = ModelParts(head.name, backbone)
    for alias, parts in _ALIASES.items():
        if alias in table:
            raise ValueError(f"model alias {alias!r} shadows a composed model {table[alias]}")
        table[alias] = parts
    return table


def list_models(pattern: str | None = None, *, aliases: bool = True) -> list[str]:
    """Sorted model names, optionally filtered by a shell pattern (``"*_resnet18"``).

    ``aliases=False`` leaves out the older names of combinations listed under
    their composed name.
    """
    table = _composed()
    names = set(_STANDALONE) | {n for n in table if aliases or n not in _ALIASES}
    return sorted(n for n in names if pattern is None or fnmatch.fnmatch(n, pattern))


def is_model(name: str) -> bool:
    """Whether ``build_model(name)`` knows ``name``."""
    return name in _STANDALONE or name in _composed()


def resolve_model(name: str) -> ModelParts:
    """The head and backbone that model ``name`` composes.

    Raises ``UnknownModelError`` (a ``KeyError``) listing the valid heads,
    backbones and models, or ``UnsupportedBackboneError`` naming what the head
    needs and which backbones provide it.
    """
    if name in _STANDALONE:
        return ModelParts(None, None)
    table = _composed()
    if name in table:
        return table[name]
    for head in HEADS.values():
        backbone = name.removeprefix(head.prefix)
        if head.prefix and name.startswith(head.prefix) and backbone in BACKBONES:
            missing = sorted(head.requires - BACKBONES[backbone].provides)
            supported = [b for b in sorted(BACKBONES) if head.supports(b)]
            raise UnsupportedBackboneError(
                f"model {name!r}: head {head.name!r} needs backbone feature(s) "
                f"{', '.join(missing)}, which backbone {backbone!r} does not provide; "
                f"backbones for {head.name!r}: {', '.join(supported)}"
            )
    raise UnknownModelError(
        f"unknown model {name!r} (a head and a backbone, '<head>_<backbone>'; the baseline "
        f"head is the bare backbone name); heads: {', '.join(sorted(HEADS))}; "
        f"backbones: {', '.join(sorted(BACKBONES))}; available models: {', '.join(list_models())}"
    )


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build model ``name`` with ``kwargs`` and record ``build_spec``.

    Keyword arguments common to every composed model: ``pretrained`` (``None`` |
    ``"imagenet"`` | checkpoint path) and ``last_stride`` go to ``build_backbone``,
    ``input_size`` (H, W) to the encoder; the rest to the head's class.
    """
    parts = resolve_model(name)
    spec = {"name": name, "kwargs": to_jsonable(kwargs)}
    try:
        json.dumps(spec)
    except TypeError as exc:
        raise TypeError(f"build_model({name!r}) kwargs must be JSON-serialisable: {exc}") from None
    if parts.head is None:
        model = _STANDALONE[name](**kwargs)
    else:
        model = HEADS[parts.head].build(parts.backbone, **kwargs)
    model.build_spec = spec
    return model


def build_model_from_spec(spec: Mapping[str, Any], *, pretrained: Any = None) -> nn.Module:
    """Rebuild an encoder from its ``build_spec`` (weights come from the checkpoint).

    ``pretrained`` replaces the recorded value (default ``None``: no ImageNet load,
    since the checkpoint's state dict overwrites every weight anyway).
    """
    from reid.models.backbones.weights import weights_loaded_later

    kwargs = dict(spec.get("kwargs", {}))
    kwargs.pop("pretrained", None)
    quiet = weights_loaded_later() if pretrained is None else contextlib.nullcontext()
    with quiet:
        model = build_model(spec["name"], pretrained=pretrained, **kwargs)
    model.build_spec = {"name": spec["name"], "kwargs": to_jsonable(spec.get("kwargs", {}))}
    return model
