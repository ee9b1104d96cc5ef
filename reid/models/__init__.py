"""Re-ID encoders: ``build_model(name, **kwargs)``, ``list_models()``.

Every registered encoder maps normalised images ``[B, 3, H, W]`` to L2-normalised
embeddings ``[B, D]`` (see ``reid.models.encoder``). A new method is one file with
``@register_model`` factories plus one import line below.
"""

from __future__ import annotations

# Method files: importing them registers their encoders (explicit, in one place).
from . import aff, baseline, frifm, part, patchnet, se_fusion  # noqa: F401
from .encoder import (
    EncoderStateError,
    ReIDEncoder,
    TrainOutput,
    first_conv,
    load_encoder_state,
)
from .registry import (
    UnknownModelError,
    build_model,
    build_model_from_spec,
    is_model,
    list_models,
    register_model,
)

__all__ = [
    "EncoderStateError",
    "ReIDEncoder",
    "TrainOutput",
    "UnknownModelError",
    "build_model",
    "build_model_from_spec",
    "first_conv",
    "is_model",
    "list_models",
    "load_encoder_state",
    "register_model",
]
