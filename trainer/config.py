"""Typed training configuration, and the only place that reads YAML.

A config file has these sections (every key optional except ``method.name``)::

    model:      {name, kwargs: {pretrained, last_stride, pooling, input_size, ...}}
    method:     {name, ...the method's own parameters (its params dataclass)}
    data:       {spec, num_workers, transforms: {flip, pad, erasing_p, color_jitter}}
    train:      {epochs, iters_per_epoch, batch_size, num_instances, sampler, grad_clip,
                 amp, channels_last, device, seed, progress, find_unused_parameters,
                 sync_bn}
    optim:      {name, lr, weight_decay, momentum, nesterov, backbone_lr_mult}
    schedule:   {name, warmup_epochs, warmup_factor, milestones, gamma, min_lr_factor}
    eval:       {every, rerank, metric, batch_size}
    checkpoint: {every, keep_last}

Command-line overrides are dotted keys (``optim.lr=1e-4``) or the short aliases of
``ALIASES`` (``epochs=``, ``iters_per_epoch=``, ``batch_size=``, ``device=``,
``seed=``, ``lr=``); values are parsed as YAML scalars. Unknown keys, in the file or
in an override, raise ``ConfigError`` listing the valid keys of that section.
Library code takes these dataclasses (or plain arguments), never YAML.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

ALIASES: dict[str, str] = {
    "epochs": "train.epochs",
    "iters_per_epoch": "train.iters_per_epoch",
    "batch_size": "train.batch_size",
    "device": "train.device",
    "seed": "train.seed",
    "lr": "optim.lr",
}
"""Short override names that work for every method."""


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names it and the valid choices."""


# ----------------------------------------------------------------------------- sections


@dataclass
class ModelConfig:
    """The encoder: a ``reid.models`` registry name and its keyword arguments."""

    name: str = "resnet50"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class MethodConfig:
    """The training method (a key of ``trainer.methods.METHODS``) and its typed params."""

    name: str
    params: Any = None


@dataclass
class TransformConfig:
    """Training augmentation (see ``reid.data.transforms.build_train_transform``)."""

    flip: bool = True
    pad: int = 10
    erasing_p: float = 0.5
    color_jitter: float = 0.0


@dataclass
class DataConfig:
    """Data loading; ``spec`` is set from ``--data`` (``FORMAT:PATH``)."""

    spec: str | None = None
    num_workers: int = 4
    transforms: TransformConfig = field(default_factory=TransformConfig)


@dataclass
class TrainConfig:
    """The loop. ``batch_size`` is global (split over DDP processes): P x K images.

    ``iters_per_epoch``: optimiser steps per epoch (``null``: about one pass of the
    data). ``device``: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1``.
    ``amp`` and ``channels_last`` only act on CUDA. ``progress``: ``auto`` shows a
    bar when stderr is a terminal; ``true`` / ``false`` force it. ``sync_bn``: under
    DDP, BatchNorm statistics over the global batch instead of each process's share.
    """

    epochs: int = 50
    iters_per_epoch: int | None = 200
    batch_size: int = 64
    num_instances: int = 4
    sampler: Literal["pk", "pk_camera"] = "pk"
    grad_clip: float | None = None
    amp: bool = True
    channels_last: bool = True
    device: str = "auto"
    seed: int = 0
    progress: bool | Literal["auto"] = "auto"
    find_unused_parameters: bool = True
    sync_bn: bool = False


@dataclass
class OptimConfig:
    """Optimiser; the backbone's learning rate is ``lr * backbone_lr_mult``."""

    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    momentum: float = 0.9
    nesterov: bool = False
    backbone_lr_mult: float = 1.0


@dataclass
class ScheduleConfig:
    """Learning-rate schedule over epochs, with optional linear warm-up.

    ``step``: multiply by ``gamma`` at each epoch of ``milestones`` (0-based epoch
    index, as ``torch.optim.lr_scheduler.MultiStepLR`` stepped per epoch).
    ``cosine``: from ``lr`` to ``lr * min_lr_factor`` after the warm-up.
    """

    name: Literal["step", "cosine", "constant"] = "step"
    warmup_epochs: float = 0.0
    warmup_factor: float = 0.01
    milestones: list[int] = field(default_factory=lambda: [20])
    gamma: float = 0.1
    min_lr_factor: float = 0.0


@dataclass
class EvalConfig:
    """Evaluation on query/gallery every ``every`` epochs (and after the last; 0 = never)."""

    every: int = 5
    rerank: bool = False
    metric: Literal["cosine", "euclidean", "sqeuclidean"] = "cosine"
    batch_size: int = 128


@dataclass
class CheckpointConfig:
    """``checkpoint_last.pt`` every epoch; ``checkpoint_epoch{N}.pt`` every ``every``
    epochs keeping the newest ``keep_last`` (``null`` keeps all, 0 writes none)."""

    every: int = 10
    keep_last: int | None = 2


@dataclass
class TrainerConfig:
    """The whole resolved configuration of one training run."""

    method: MethodConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON-ready dict; ``method`` is flattened to ``{name, **params}``."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "method":
                params = dataclasses.asdict(value.params) if value.params is not None else {}
                out["method"] = {"name": value.name, **params}
            else:
                out[f.name] = dataclasses.asdict(value)
        return _plain(out)


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "train": TrainConfig,
    "optim": OptimConfig,
    "schedule": ScheduleConfig,
    "eval": EvalConfig,
    "checkpoint": CheckpointConfig,
}
FREE_FORM = {"model.kwargs"}
"""Dict-valued fields whose keys are checked by their consumer (``build_model``)."""


# ----------------------------------------------------------------------------- loading


def load_config(
    path: str | Path | None, overrides: Sequence[str] = (), base: Mapping[str, Any] | None = None
) -> TrainerConfig:
    """Read a YAML file (or start from ``base``), apply ``key=value`` overrides, validate."""
    raw: dict[str, Any] = _deep_copy(base) if base is not None else {}
    if path is not None:
        raw = read_yaml(path)
    for text in overrides:
        key, value = parse_override(text)
        set_dotted(raw, key, value)
    return config_from_dict(raw)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from ``path``; ``ConfigError`` when missing or malformed."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot parse config file {path}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got a list/scalar")
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """``"optim.lr=1e-4"`` -> ``("optim.lr", 1e-4)``; aliases expanded, value as YAML."""
    key, sep, value_text = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(
            f"override {text!r} is not KEY=VALUE (e.g. optim.lr=1e-4 or epochs=10); "
            f"short keys: {', '.join(ALIASES)}"
        )
    key = ALIASES.get(key, key)
    try:
        value = yaml.safe_load(value_text) if value_text.strip() else None
    except yaml.YAMLError:
        value = value_text
    return key, value


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set ``raw[a][b][c] = value`` for ``key = "a.b.c"``, creating mappings on the way."""
    parts = key.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            where = ".".join(parts[: i + 1])
            raise ConfigError(f"override {key}: {where} is a value, not a section")
        node = child
    node[parts[-1]] = value


def config_from_dict(raw: Mapping[str, Any]) -> TrainerConfig:
    """Validate a plain dict (YAML file, saved ``config.yaml``) into a ``TrainerConfig``."""
    if not isinstance(raw, Mapping):
        raise ConfigError("config must be a mapping of sections")
    valid = ["method", *SECTIONS]
    unknown = [k for k in raw if k not in valid]
    if unknown:
        raise ConfigError(
            f"unknown config section(s) {', '.join(map(repr, unknown))}; "
            f"valid sections: {', '.join(valid)}"
        )
    sections = {
        name: dataclass_from_dict(cls, raw.get(name) or {}, name) for name, cls in SECTIONS.items()
    }
    method = method_config_from_dict(raw.get("method"))
    config = TrainerConfig(method=method, **sections)
    check_config(config)
    return config


def method_config_from_dict(raw: Any) -> MethodConfig:
    """``{name, **params}`` -> ``MethodConfig`` with the method's typed params."""
    from trainer.methods import METHODS

    if not isinstance(raw, Mapping) or not raw.get("name"):
        raise ConfigError(
            f"config section 'method' needs a name; available methods: {', '.join(METHODS)}"
        )
    params = dict(raw)
    name = str(params.pop("name"))
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; available methods: {', '.join(METHODS)}")
    return MethodConfig(name, dataclass_from_dict(METHODS[name].params_cls, params, "method"))


def check_config(config: TrainerConfig) -> None:
    """Range checks that need more than one field; ``ConfigError`` on the first problem."""
    t = config.train
    _positive("train.epochs", t.epochs)
    _positive("train.batch_size", t.batch_size)
    _positive("train.num_instances", t.num_instances)
    if t.iters_per_epoch is not None:
        _positive("train.iters_per_epoch", t.iters_per_epoch)
    if t.batch_size % t.num_instances:
        raise ConfigError(
            f"train.batch_size ({t.batch_size}) must be a multiple of train.num_instances "
            f"({t.num_instances}): a batch is P identities x K instances"
        )
    if t.grad_clip is not None and t.grad_clip <= 0:
        raise ConfigError(f"train.grad_clip must be > 0 or null, got {t.grad_clip}")
    if config.data.num_workers < 0:
        raise ConfigError(f"data.num_workers must be >= 0, got {config.data.num_workers}")
    if config.optim.lr <= 0:
        raise ConfigError(f"optim.lr must be > 0, got {config.optim.lr}")
    s = config.schedule
    if s.warmup_epochs < 0 or not 0 < s.warmup_factor <= 1:
        raise ConfigError("schedule.warmup_epochs must be >= 0 and warmup_factor in (0, 1]")
    if sorted(s.milestones) != list(s.milestones):
        raise ConfigError(f"schedule.milestones must be increasing, got {s.milestones}")
    if config.eval.every < 0 or config.checkpoint.every < 0:
        raise ConfigError("eval.every and checkpoint.every must be >= 0 (0 = never)")
    _positive("eval.batch_size", config.eval.batch_size)
    if config.checkpoint.keep_last is not None and config.checkpoint.keep_last < 0:
        raise ConfigError("checkpoint.keep_last must be >= 0 or null (keep all)")


def save_config(config: TrainerConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (re-loadable with ``load_config``)."""
    text = yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=None)
    Path(path).write_text(text, encoding="utf-8")


# ----------------------------------------------------------------------------- dataclasses


def dataclass_from_dict(cls: type, data: Any, section: str) -> Any:
    """Build dataclass ``cls`` from a mapping, checking keys and coercing value types.

    Unknown keys raise ``ConfigError`` naming the section and listing its valid keys;
    nested dataclass fields are built recursively (``section.field``).
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"config section {section!r} must be a mapping, got {type(data).__name__}"
        )
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(f'{section}.{k}' for k in unknown)}; "
            f"valid keys in {section!r}: {', '.join(fields)}"
        )
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in data.items():
        key = f"{section}.{name}"
        values[name] = value if key in FREE_FORM else _coerce(value, hints[name], key)
    try:
        return cls(**values)
    except TypeError as exc:  # a required field without default is missing
        raise ConfigError(f"config section {section!r}: {exc}") from None
    except ValueError as exc:  # a __post_init__ check of the dataclass
        raise ConfigError(f"config section {section!r}: {exc}") from None


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against type ``hint``; accept ints for floats and '1e-4' strings."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        # Literals and bools before numbers: "auto" stays a string, True stays a bool.
        for arg in sorted((a for a in args if a is not type(None)), key=_union_order):
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        if len(errors) == 1:
            raise ConfigError(errors[0])
        raise ConfigError(f"{key}: invalid value {value!r} (expected {_describe(hint)})")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if dataclasses.is_dataclass(hint):
        return dataclass_from_dict(hint, value, key)
    if origin in (list, tuple, Sequence):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        return _to_float(value, key)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def _describe(hint: Any) -> str:
    """``int | None`` -> ``"int or null"``; Literals list their values."""
    if typing.get_origin(hint) is Literal:
        return " or ".join(map(repr, typing.get_args(hint)))
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", str(hint))


def _union_order(arg: Any) -> int:
    if typing.get_origin(arg) is Literal:
        return 0
    return {bool: 1, int: 2, float: 3}.get(arg, 4)


def _to_float(value: Any, key: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
        try:
            number = float(value)
        except ValueError:
            pass
        else:
            if math.isfinite(number):
                return number
    raise ConfigError(f"{key}: expected a number, got {value!r}")


def _positive(key: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"{key} must be >= 1, got {value}")


def _plain(value: Any) -> Any:
    """Tuples -> lists, Paths -> str, recursively (YAML-safe)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _deep_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}
