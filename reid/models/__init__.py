"""Re-ID encoders: ``build_model(name, **kwargs)``, ``list_models()``.

Every registered encoder maps normalised images ``[B, 3, H, W]`` to L2-normalised
embeddings ``[B, D]`` (see ``reid.models.encoder``). A model is a head (a method)
on a backbone, named ``"<head>_<backbone>"`` (``"aff_resnet34"``; the baseline is
the bare backbone name, ``"resnet50"``): see ``reid.models.registry``.

* A new head (method) is one file with a ``ReIDEncoder`` subclass decorated with
  ``@register_head("name")`` (``requires=[STAGES]`` if it reads the backbone's
  stages), plus one import line below; it is composed with every backbone.
* A new backbone is one file in ``reid/models/backbones/`` (see its ``__init__``);
  it is composed with every head that supports it.
"""

from __future__ import annotations

# Method files: importing them registers their heads (explicit, in one place).
from . import aff, baseline, frifm, part, patchnet, se_fusion  # noqa: F401
from .encoder import (
    EncoderStateError,
    ReIDEncoder,
    TrainOutput,
    first_conv,
    load_encoder_state,
)
from .registry import (
    HEADS,
    ModelParts,
    UnknownModelError,
    UnsupportedBackboneError,
    build_model,
    build_model_from_spec,
    is_model,
    list_models,
    register_alias,
    register_head,
    register_model,
    resolve_model,
)

__all__ = [
    "HEADS",
    "EncoderStateError",
    "ModelParts",
    "ReIDEncoder",
    "TrainOutput",
    "UnknownModelError",
    "UnsupportedBackboneError",
    "build_model",
    "build_model_from_spec",
    "first_conv",
    "is_model",
    "list_models",
    "load_encoder_state",
    "register_alias",
    "register_head",
    "register_model",
    "resolve_model",
]
