"""Typed training configuration (pydantic models), and the only place that reads YAML.

A config file has these sections (every key optional except ``method.name``)::

    _base_:     other.yaml        # optional: start from that file (relative path)
    model:      {name, kwargs: {pretrained, last_stride, pooling, input_size, ...}}
    method:     {name, ...the method's own parameters (its params model)}
    data:       {spec, num_workers, transforms: {flip, pad, erasing_p, color_jitter}}
    reference:  {spec, splits, batch_size, num_instances, sampler}
    train:      {epochs, iters_per_epoch, batch_size, num_instances, sampler, grad_clip,
                 amp, channels_last, device, seed, progress, threads,
                 find_unused_parameters, sync_bn, init}
    optim:      {name, lr, weight_decay, momentum, nesterov, backbone_lr_mult}
    schedule:   {name, warmup_epochs, warmup_factor, milestones, gamma, min_lr_factor}
    eval:       {every, rerank, metric, batch_size, camera_prior}
    checkpoint: {every, keep_last, select, select_every}

``_base_`` names a file whose settings this one starts from (chains allowed): mappings
are merged key by key, anything else (lists included) is replaced. Command-line
overrides are dotted keys (``optim.lr=1e-4``) or the short aliases of ``ALIASES``
(``epochs=``, ``iters_per_epoch=``, ``batch_size=``, ``device=``, ``seed=``,
``lr=``); values are parsed as YAML. Every value is validated here, once: unknown
keys raise ``ConfigError`` listing the valid keys of their section (and the closest
one), wrong types and out-of-range values name the dotted key. Library code takes
these models (or plain arguments), never YAML.
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from reid.jsonable import to_jsonable

ALIASES: dict[str, str] = {
    "epochs": "train.epochs",
    "iters_per_epoch": "train.iters_per_epoch",
    "batch_size": "train.batch_size",
    "device": "train.device",
    "seed": "train.seed",
    "lr": "optim.lr",
}
"""Short override names that work for every method."""

BASE_KEY = "_base_"
"""Top-level key of a config file naming the file it starts from."""


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names it and the valid choices."""


# ----------------------------------------------------------------------------- base models


class Section(BaseModel):
    """A config section: unknown keys rejected, no silent type changes, finite numbers.

    Types are strict (``"3"`` is not an integer, ``1`` is not ``true``) except that an
    integer is a valid float; ``null`` for a whole section means its defaults.
    """

    model_config = ConfigDict(
        extra="forbid", strict=True, allow_inf_nan=False, validate_assignment=True
    )

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if data is None:
            return {}
        if isinstance(data, Mapping):
            unknown = [str(k) for k in data if k not in cls.model_fields]
            if unknown:
                raise PydanticCustomError(
                    "unknown_keys",
                    "unknown keys {unknown}",
                    {"unknown": unknown, "valid": list(cls.model_fields)},
                )
        return data


class Params(Section):
    """Settings handed inward once validated (method params, clustering): immutable."""

    model_config = ConfigDict(frozen=True)


# ----------------------------------------------------------------------------- sections


class ModelConfig(Section):
    """The encoder: a ``reid.models`` registry name and its keyword arguments.

    ``kwargs`` is free-form here; ``build_model`` checks it against the encoder.
    """

    name: str = "resnet50"
    kwargs: dict[str, Any] = {}


class MethodConfig(Section):
    """The training method (a key of ``trainer.methods.METHODS``) and its typed params.

    In a file the section is flat, ``{name, **params}``; ``params`` is validated by
    the method's own params model (``Method.params_cls``).
    """

    name: str
    params: Params

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:  # replaces Section's: the keys depend on the name
        from trainer.methods import METHODS

        available = ", ".join(sorted(METHODS))
        if not isinstance(data, Mapping) or not data.get("name"):
            raise PydanticCustomError(
                "method_name",
                f"config section 'method' needs a name; available methods: {available}",
            )
        name, params = data["name"], {k: v for k, v in data.items() if k != "name"}
        if not isinstance(name, str) or name not in METHODS:
            raise PydanticCustomError(
                "unknown_method", f"unknown method {name!r}; available methods: {available}"
            )
        params_cls = METHODS[name].params_cls
        if isinstance(params.get("params"), params_cls) and len(params) == 1:
            return {"name": name, "params": params["params"]}  # MethodConfig(name=, params=)
        return {"name": name, "params": params_cls.model_validate(params)}


class TransformConfig(Section):
    """Training augmentation (see ``reid.data.transforms.build_train_transform``)."""

    flip: bool = True
    pad: int = 10
    erasing_p: float = 0.5
    color_jitter: float = 0.0


class DataConfig(Section):
    """Data loading; ``spec`` is set from ``--data`` (``FORMAT:PATH``)."""

    spec: str | None = None
    num_workers: int = Field(4, ge=0)
    transforms: TransformConfig = TransformConfig()


class ReferenceConfig(Section):
    """The labelled auxiliary ("reference") stream; ``spec`` is set from ``--reference``.

    A labelled dataset whose identities are disjoint from the target's (MAR's agents
    are its identities). ``splits``: the splits whose images form the reference set
    (MAR's code uses all of MSMT17: ``[train, query, gallery]``; identities of the
    train split and of query + gallery are kept apart, since formats such as MSMT17
    number them separately). ``batch_size``: reference images per step (global, split
    over DDP processes like ``train.batch_size``), beside the target's.
    ``sampler``: ``random`` (a shuffle of the images, MAR) or ``pk`` (P identities x
    ``num_instances`` images).
    """

    spec: str | None = None
    splits: list[Literal["train", "query", "gallery"]] = ["train"]
    batch_size: int = Field(64, ge=1)
    num_instances: int = Field(1, ge=1)
    sampler: Literal["random", "pk"] = "random"

    @field_validator("splits")
    @classmethod
    def _some_splits(cls, splits: list[str]) -> list[str]:
        if not splits or len(set(splits)) != len(splits):
            raise ValueError(f"expected one or more distinct splits, got {splits}")
        return splits

    @model_validator(mode="after")
    def _whole_identities(self) -> ReferenceConfig:
        if self.sampler == "pk" and self.batch_size % self.num_instances:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of num_instances "
                f"({self.num_instances}) with sampler pk"
            )
        return self


class TrainConfig(Section):
    """The loop. ``batch_size`` is global (split over DDP processes): P x K images.

    ``iters_per_epoch``: optimiser steps per epoch (``null``: one pass of the whole
    train set, ``ceil(N / batch_size)``, however many images the epoch's labels keep).
    ``device``: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1``.
    ``amp`` and ``channels_last`` only act on CUDA. ``progress``: ``auto`` shows
    bars (training steps, the per-epoch feature extraction, evaluation) when stderr is a
    terminal; ``true`` / ``false`` force them. ``sync_bn``: under
    DDP, BatchNorm statistics over the global batch instead of each process's share.
    ``sampler``: ``pk`` (P labels x K images), ``pk_camera`` (the K from as many cameras
    as possible) or ``random`` (a shuffle of the labelled images; ``num_instances`` 1).
    ``init``: a checkpoint to start from (set from ``--init``): its encoder weights and
    the method's trainable parameters (MAR's agents after the ``pretrain`` stage), not
    its optimiser or counters.
    """

    epochs: int = Field(50, ge=1)
    iters_per_epoch: int | None = Field(200, ge=1)
    batch_size: int = Field(64, ge=1)
    num_instances: int = Field(4, ge=1)
    sampler: Literal["pk", "pk_camera", "random"] = "pk"
    grad_clip: float | None = Field(None, gt=0)
    amp: bool = True
    channels_last: bool = True
    device: str = "auto"
    seed: int = 0
    progress: bool | Literal["auto"] = "auto"
    threads: int | Literal["auto"] = "auto"
    find_unused_parameters: bool = True
    sync_bn: bool = False
    init: str | None = None

    @field_validator("threads")
    @classmethod
    def _positive_threads(cls, threads: int | str) -> int | str:
        if isinstance(threads, int) and threads < 1:
            raise ValueError(f"expected auto or a thread count >= 1, got {threads}")
        return threads

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
            raise ValueError(f"expected auto, cpu, cuda or cuda:N, got {device!r}")
        return device

    @model_validator(mode="after")
    def _whole_identities(self) -> TrainConfig:
        if self.batch_size % self.num_instances:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of num_instances "
                f"({self.num_instances}): a batch is P identities x K instances"
            )
        return self


class OptimConfig(Section):
    """Optimiser; the backbone's learning rate is ``lr * backbone_lr_mult``."""

    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(3.5e-4, gt=0)
    weight_decay: float = 5e-4
    momentum: float = 0.9
    nesterov: bool = False
    backbone_lr_mult: float = 1.0


class ScheduleConfig(Section):
    """Learning-rate schedule over epochs, with optional linear warm-up.

    ``step``: multiply by ``gamma`` at each epoch of ``milestones`` (0-based epoch
    index, as ``torch.optim.lr_scheduler.MultiStepLR`` stepped per epoch).
    ``cosine``: from ``lr`` to ``lr * min_lr_factor`` after the warm-up.
    """

    name: Literal["step", "cosine", "constant"] = "step"
    warmup_epochs: float = Field(0.0, ge=0)
    warmup_factor: float = Field(0.01, gt=0, le=1)
    milestones: list[int] = [20]
    gamma: float = 0.1
    min_lr_factor: float = 0.0

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, milestones: list[int]) -> list[int]:
        if sorted(milestones) != milestones:
            raise ValueError(f"must be increasing, got {milestones}")
        return milestones


class EvalConfig(Section):
    """Evaluation on query/gallery every ``every`` epochs (and after the last; 0 = never);
    with it on, a fresh run also scores its starting model and ends comparing with it.

    ``camera_prior``: weight added to the distance of same-camera query-gallery pairs
    (the selective-contrast reference's evaluation; 0 = plain distances).
    """

    every: int = Field(5, ge=0)
    rerank: bool = False
    metric: Literal["cosine", "euclidean", "sqeuclidean"] = "cosine"
    batch_size: int = Field(128, ge=1)
    camera_prior: float = Field(0.0, ge=0)


class CheckpointConfig(Section):
    """``checkpoint_last.pt`` every epoch; ``checkpoint_epoch{N}.pt`` every ``every``
    epochs keeping the newest ``keep_last`` (``null`` keeps all, 0 writes none).

    ``select``: how ``model_selected.pt`` is chosen without labels: ``cluster_quality``
    (``trainer.selection``: scored before training and every ``select_every`` epochs and
    after the last) or ``last`` (no selection file, no extra feature passes)."""

    every: int = Field(10, ge=0)
    keep_last: int | None = Field(2, ge=0)
    select: Literal["cluster_quality", "last"] = "cluster_quality"
    select_every: int = Field(2, ge=1)


class TrainerConfig(Section):
    """The whole resolved configuration of one training run."""

    method: MethodConfig = Field(None, validate_default=True)  # None: "needs a name"
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    reference: ReferenceConfig = ReferenceConfig()
    train: TrainConfig = TrainConfig()
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    eval: EvalConfig = EvalConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON-ready dict; ``method`` is flattened to ``{name, **params}``."""
        method = {"name": self.method.name, **self.method.params.model_dump()}
        return to_jsonable({"method": method, **self.model_dump(exclude={"method"})})


# ----------------------------------------------------------------------------- loading


def load_config(
    path: str | Path | None, overrides: Sequence[str] = (), base: Mapping[str, Any] | None = None
) -> TrainerConfig:
    """Read a YAML file (or start from ``base``), apply ``key=value`` overrides, validate."""
    raw: dict[str, Any] = copy.deepcopy(dict(base)) if base is not None else {}
    if path is not None:
        raw = read_yaml(path)
    for text in overrides:
        key, value = parse_override(text)
        set_dotted(raw, key, value)
    return config_from_dict(raw)


def config_from_dict(raw: Mapping[str, Any]) -> TrainerConfig:
    """Validate a plain dict (YAML file, saved ``config.yaml``) into a ``TrainerConfig``."""
    if not isinstance(raw, Mapping):
        raise ConfigError("config must be a mapping of sections")
    return validate(TrainerConfig, raw)


def validate(model: type[Section], data: Any, section: str = "") -> Any:
    """``model.model_validate(data)``; a ``ValidationError`` becomes one ``ConfigError``
    whose lines name the dotted keys (prefixed by ``section``)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("\n".join(describe_errors(exc, section))) from None


def save_config(config: TrainerConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (re-loadable with ``load_config``)."""
    text = yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=None)
    Path(path).write_text(text, encoding="utf-8")


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading ``1e-4`` as a number (YAML 1.2) instead of a string."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in ``path`` merged over its ``_base_`` chain; ``ConfigError`` when a
    file is missing or malformed, or the chain is a cycle."""
    return _read_chain(Path(path).expanduser(), ())


def _read_chain(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    """``path`` merged over its bases; ``chain``: the files that led here, top first."""
    where = f" (the {BASE_KEY} of {chain[-1]})" if chain else ""
    if not path.is_file():
        raise ConfigError(f"config file {path} not found{where}")
    if path.resolve() in {p.resolve() for p in chain}:
        raise ConfigError(f"{BASE_KEY} cycle: {' -> '.join(map(str, (*chain, path)))}")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot parse config file {path}{where}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got a list/scalar")
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: {BASE_KEY} must be a file name (relative to its folder)")
    return deep_merge(_read_chain(path.parent / Path(base).expanduser(), (*chain, path)), data)


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``update`` on top: mappings merged recursively, other values replaced."""
    merged = dict(base)
    for key, value in update.items():
        both = isinstance(value, Mapping) and isinstance(merged.get(key), Mapping)
        merged[key] = deep_merge(merged[key], value) if both else value
    return merged


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
        value = yaml.load(value_text, Loader=_Loader) if value_text.strip() else None
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


# ----------------------------------------------------------------------------- messages

_EXPECTED = {
    "int_type": "an integer",
    "float_type": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping of keys",
    "none_required": "null",
}
_BOUNDS = {
    "greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<=",
}  # fmt: skip
_UNION_TAGS = {"bool", "int", "float", "str", "none", "list", "dict"}


def describe_errors(exc: ValidationError, section: str = "") -> list[str]:
    """One line per invalid key of a pydantic ``ValidationError``, naming the dotted key."""
    by_key: dict[str, list[ErrorDetails]] = {}
    for error in exc.errors():
        parts = [section] if section else []
        for part in error["loc"]:
            if isinstance(part, int) and parts:  # a list index: "schedule.milestones[1]"
                parts[-1] += f"[{part}]"
            elif part.isidentifier() and part not in _UNION_TAGS:  # not a union member's tag
                parts.append(part)
        by_key.setdefault(".".join(parts), []).append(error)
    return [_describe(key, errors) for key, errors in by_key.items()]


def _describe(key: str, errors: list[ErrorDetails]) -> str:
    error = errors[0]
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "unknown_keys":
        return _unknown_keys(key, ctx["unknown"], ctx["valid"])
    if kind in ("method_name", "unknown_method"):
        return error["msg"]
    if kind in _BOUNDS:
        return f"{key} must be {_BOUNDS[kind]} {next(iter(ctx.values())):g}, got {value!r}"
    if kind == "value_error":
        return f"{key}: {ctx['error']}"
    if kind == "missing":
        return f"{key} is required"
    expected = [_EXPECTED.get(e["type"]) or (e.get("ctx") or {}).get("expected") for e in errors]
    if all(expected):  # type mismatches (several when the key accepts a union of types)
        return f"{key}: expected {' or '.join(expected)}, got {value!r}"
    return f"{key}: {error['msg']}"


def _unknown_keys(section: str, unknown: list[str], valid: list[str]) -> str:
    def dotted(k: str) -> str:
        return f"{section}.{k}" if section else repr(k)

    where = f"valid keys in {section!r}" if section else "valid sections"
    what = "key(s)" if section else "config section(s)"
    text = f"unknown {what} {', '.join(map(dotted, unknown))}; {where}: {', '.join(valid)}"
    guesses = [
        f"{dotted(match[0])} (for {dotted(k)})" if len(unknown) > 1 else dotted(match[0])
        for k in unknown
        if (match := difflib.get_close_matches(k, valid, n=1, cutoff=0.5))
    ]
    return text + (f"; did you mean {', '.join(guesses)}?" if guesses else "")
