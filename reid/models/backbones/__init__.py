"""Backbones: ``build_backbone(name, pretrained=..., last_stride=...)``.

Every backbone is a ``Backbone``: ``stem`` + four ``stages`` with known
``stage_channels`` and ``stage_strides`` (``base.py``). ``BACKBONES`` maps each
registered name to its ``BackboneEntry``.

Adding a backbone is one file here plus its name in the import line below::

    # reid/models/backbones/mynet.py
    @register_backbone("mynet")  # weights=BundledWeights(...) if a package ships them
    def mynet(last_stride: int = 1) -> Backbone:
        \"\"\"MyNet, 1024 output channels.\"\"\"
        return MyNet(last_stride=last_stride)

It is then composed with every head that supports it (``aff_mynet``, ``mynet``
for the baseline, ...: see ``reid.models.registry``); no head file changes.
"""

from __future__ import annotations

# Backbone files: importing them registers their backbones (explicit, in one place).
from . import efficientnet_lite, mobilenetv2, resnet  # noqa: F401
from .base import STAGES, Backbone
from .registry import (
    BACKBONES,
    BackboneEntry,
    UnknownBackboneError,
    build_backbone,
    register_backbone,
)
from .weights import BUNDLED_WEIGHTS, BundledWeights, LoadReport, PretrainedWeightsError

__all__ = [
    "BACKBONES",
    "BUNDLED_WEIGHTS",
    "STAGES",
    "Backbone",
    "BackboneEntry",
    "BundledWeights",
    "LoadReport",
    "PretrainedWeightsError",
    "UnknownBackboneError",
    "build_backbone",
    "register_backbone",
]
