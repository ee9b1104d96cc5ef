"""Training methods: ``METHODS`` (name -> ``Method`` subclass) and ``build_method``.

A new method is one file defining a ``Method`` subclass decorated with
``@register_method`` (with its ``name`` and its ``params_cls``, a
``trainer.config.Params`` model in the same file), one import below, and its
YAML configs in ``trainer/configs/``. ``tests/test_methods.py`` runs every
registered method through an epoch, a step and a resume.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

# One import per method: importing the module registers it.
from trainer.methods import (  # noqa: F401
    aff_scl,
    cluster_contrast,
    frifm_adl,
    iics,
    mar,
    paul,
    selective,
    supervised,
)
from trainer.methods.base import (
    METHODS,
    EpochContext,
    EpochPlan,
    Method,
    StepOutput,
    TrainInfo,
    register_method,
)


class UnknownMethodError(KeyError):
    """A method name that is not a key of ``METHODS``."""

    def __str__(self) -> str:
        return str(self.args[0])


def method_class(name: str) -> type[Method]:
    """The ``Method`` subclass registered as ``name``; the error lists the valid names."""
    if name not in METHODS:
        raise UnknownMethodError(
            f"unknown method {name!r}; available methods: {', '.join(sorted(METHODS))}"
        )
    return METHODS[name]


def build_method(
    name: str, encoder: nn.Module, params: Mapping[str, Any] | Any, info: TrainInfo
) -> Method:
    """Build method ``name`` around ``encoder``.

    ``params`` is the method's params model or a plain dict validated into it
    (problems raise ``trainer.config.ConfigError`` naming the ``method.`` keys).
    """
    from trainer.config import validate

    cls = method_class(name)
    if isinstance(params, Mapping) or params is None:
        params = validate(cls.params_cls, params or {}, "method")
    elif not isinstance(params, cls.params_cls):
        raise TypeError(
            f"method {name!r} takes {cls.params_cls.__name__} params, got {type(params).__name__}"
        )
    return cls(encoder, params, info)


__all__ = [
    "METHODS",
    "EpochContext",
    "EpochPlan",
    "Method",
    "StepOutput",
    "TrainInfo",
    "UnknownMethodError",
    "build_method",
    "method_class",
    "register_method",
]
