"""Training methods: ``METHODS`` (name -> ``Method`` subclass) and ``build_method``.

A new method is one file defining a ``Method`` subclass (with its ``params_cls``
dataclass), one import line and one ``METHODS`` entry below, and its YAML configs in
``trainer/configs/``. The set is small and explicit, so it is a plain dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from trainer.methods.aff_scl import AffScl
from trainer.methods.base import (
    EpochContext,
    EpochPlan,
    Method,
    StepOutput,
    TrainInfo,
)
from trainer.methods.cluster_contrast import ClusterContrast
from trainer.methods.frifm_adl import FrifmAdl
from trainer.methods.supervised import Supervised

METHODS: dict[str, type[Method]] = {
    "supervised": Supervised,
    "cluster_contrast": ClusterContrast,
    "aff_scl": AffScl,
    "frifm_adl": FrifmAdl,
}


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

    ``params`` is the method's params dataclass or a plain dict turned into it
    (unknown keys raise ``trainer.config.ConfigError`` listing the valid ones).
    """
    cls = method_class(name)
    if isinstance(params, Mapping) or params is None:
        from trainer.config import dataclass_from_dict

        params = dataclass_from_dict(cls.params_cls, params or {}, "method")
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
]
