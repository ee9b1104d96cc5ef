"""One conversion of nested Python / numpy values into JSON- and YAML-safe types."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

import numpy as np


def to_jsonable(value: Any, *, nonfinite_as_none: bool = False) -> Any:
    """Mappings -> dicts with str keys, sequences and arrays -> lists, numpy scalars ->
    Python numbers, paths and str subclasses -> str, recursively.

    Anything else is returned unchanged (a caller that needs a guarantee runs
    ``json.dumps`` on the result). ``nonfinite_as_none`` turns NaN and infinities
    into ``None``, which strict JSON parsers accept.
    """
    if isinstance(value, Mapping):
        return {
            str(k): to_jsonable(v, nonfinite_as_none=nonfinite_as_none) for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v, nonfinite_as_none=nonfinite_as_none) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist(), nonfinite_as_none=nonfinite_as_none)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        return None if nonfinite_as_none and not math.isfinite(value) else value
    if isinstance(value, PurePath | str):
        return str(value)  # also str subclasses such as torch's TorchVersion
    return value
