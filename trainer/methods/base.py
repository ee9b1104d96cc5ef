"""The contract between the training loop and a method.

A *method* owns everything used only for training (memories, classifiers,
discriminators, pseudo-labels); the encoder it trains is the pure
``reid.models`` encoder that gets exported. The loop (``trainer.engine``) runs,
per epoch::

    features = extract(encoder, train images)          # only if method.wants_features(epoch)
    plan = method.prepare_epoch(EpochContext(...))      # pseudo-labels, memories, ...
    for batch in loader(sampler over plan.labels):
        out = method.training_step(batch)               # named, already weighted losses
        sum(out.losses.values()).backward(); optimizer.step()
        method.after_step(batch, out)                   # explicit memory updates (no grad)
    hooks (evaluation, checkpoint, logging)

Batches are dicts of named streams: ``batch["target"]`` holds the training images
(``image`` [B,3,H,W], ``index`` [B] into the train records, ``label`` [B] pseudo or
true label, ``camid`` [B]); methods with a labelled auxiliary set (``uses_reference``,
e.g. MAR) also get ``batch["reference"]`` (the same keys; ``index`` into the reference
records, ``label`` the reference identity ``0..C-1``) from its own sampler and batch
size (``reference:`` in the config, ``--reference`` on the command line). A method
trains on the streams ``streams()`` names: a stage on the reference set alone (MAR's
``pretrain``) returns ``("reference",)`` and the loop loads no target batch.

What the loop guarantees and expects (``trainer.engine``; additions to the above):

* ``EpochContext.true_labels`` is given only to methods with ``needs_labels``
  (``None`` otherwise), mapped to ``0..C-1``.
* Under DDP ``training_step`` is called through ``DistributedDataParallel`` (the
  whole method is wrapped, so the encoder and ``extra_parameters`` get averaged
  gradients): do every differentiable computation inside ``training_step``.
  ``prepare_epoch`` gets identical features on every rank and ``run_once`` shares
  one result; ``after_step`` gets this rank's batch, so a method that updates
  memories gathers the batch itself (``_clustered.gather_batch``) to keep them
  identical. DDP does not broadcast buffers.
* An epoch without labels (every label ``-1``, e.g. clustering found no cluster) is
  the loop's to handle, not the method's: it warns once (``NoLabelsWarning``).
* State lives in the module's ``state_dict`` (buffers, or ``get_extra_state``
  holding tensors and plain containers): checkpoints save it, ``--resume`` restores
  it, and when a plan has no labelled sample the loop restores the state it had
  before ``prepare_epoch`` and reuses the previous labels. Buffers may change shape
  between epochs; trainable parameters must keep their shape (the optimiser holds them).
* Losses are summed in float32; AMP autocast (CUDA) wraps ``training_step``.
* ``--init CKPT`` starts a run from another run's checkpoint: the encoder's weights and
  what ``init_from_state`` takes from the saved method state (default: the method
  parameters whose names match, e.g. MAR's agents), not the optimiser or counters.
* ``needs_reference(params)`` (default ``uses_reference``) decides per configuration
  whether ``--reference`` is required (and refused otherwise): PAUL's unsupervised stage
  needs none, its ``pretrain`` stage does.
* ``view_transforms(base)``: extra views of each target image the loader adds beside
  ``image`` (PAUL's surrogate positive, ``batch["target"]["positive"]``), each with its
  own seeded generator (``reid.data.torch_dataset``).
* ``encoder_param_groups()`` puts encoder parameters in their own optimiser groups (PAUL's
  patch generator) and ``lr_factor(group, epoch)`` scales a group's learning rate on top
  of the schedule (a pure function of the fractional epoch, so resumes match). Encoder
  parameters a method freezes (``requires_grad_(False)`` in ``__init__``) are left out of
  the optimiser.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

from reid.data.base import ImageRecord
from reid.data.transforms import Compose
from trainer.config import Params

T = TypeVar("T")
M = TypeVar("M", bound="type[Method]")

METHODS: dict[str, type[Method]] = {}
"""Registered methods by name (filled by :func:`register_method`)."""


def register_method(cls: M) -> M:
    """Class decorator: register a ``Method`` subclass in ``METHODS`` under ``cls.name``."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__} needs a class attribute name = '...'")
    params_cls = getattr(cls, "params_cls", None)
    if not (isinstance(params_cls, type) and issubclass(params_cls, Params)):
        raise TypeError(f"{cls.__name__}.params_cls must be a trainer.config.Params model")
    if METHODS.get(name, cls) is not cls:
        raise ValueError(f"method name {name!r} is taken by {METHODS[name].__qualname__}")
    METHODS[name] = cls
    return cls


def check_camera_ids(camids: torch.Tensor, num_cameras: int) -> None:
    """Raise a ``ValueError`` naming the range unless every id is in ``[0, num_cameras)``."""
    if camids.numel() and (int(camids.min()) < 0 or int(camids.max()) >= num_cameras):
        low, high = int(camids.min()), int(camids.max())
        raise ValueError(f"camera ids must be in [0, {num_cameras}), got {low}..{high}")


def run_here(compute: Callable[[], T]) -> T:
    """Single-process ``EpochContext.run_once``: just compute."""
    return compute()


@dataclass(frozen=True)
class TrainInfo:
    """Facts about the run a method needs to build its state."""

    num_train: int
    num_cameras: int
    num_classes: int | None
    """True identity count when the train split is labelled (for supervised)."""
    embedding_dim: int
    device: torch.device
    epochs: int = 1
    """``train.epochs`` of the run (methods with per-epoch schedules, e.g. IICS)."""
    num_reference: int = 0
    """Images of the reference set (0 without one)."""
    num_reference_classes: int = 0
    """Identities of the reference set (MAR: one agent each; 0 without one)."""


@dataclass
class EpochContext:
    """What the loop hands a method at the start of an epoch."""

    epoch: int
    records: Sequence[ImageRecord]
    camids: np.ndarray
    true_labels: np.ndarray | None
    """Identity labels 0..C-1 (-1 unlabeled) when the dataset has them; only
    supervised methods may use them."""
    features: torch.Tensor | None
    """L2-normalised train-set embeddings ``[N, D]`` (on the training device) from
    the encoder in eval mode, when ``method.wants_features(epoch)``; identical on every
    rank; ``None`` otherwise."""
    run_once: Callable[[Callable[[], Any]], Any] = run_here
    """Run an expensive deterministic computation (clustering) once and share its
    (picklable) result with every process; under DDP rank 0 computes and broadcasts."""


@dataclass
class EpochPlan:
    """What a method decided for the epoch: the labels the sampler draws from."""

    labels: np.ndarray
    """One int per train record: a class index >= 0, or -1 to leave it out."""
    stats: dict[str, float] = field(default_factory=dict)
    """Numbers worth logging, e.g. ``num_clusters``, ``outlier_ratio``."""
    fresh_parameters: tuple[torch.nn.Parameter, ...] = ()
    """Trainable parameters the method re-initialised for this epoch (e.g. a new
    classifier over new pseudo-labels): the loop drops their optimiser state
    (momentum, Adam moments), as a newly built optimiser would have none."""


@dataclass
class StepOutput:
    """The result of one training step."""

    losses: dict[str, torch.Tensor]
    """Named loss terms, already weighted; the loop back-propagates their sum."""
    features: torch.Tensor | None = None
    """Batch embeddings the method wants back in ``after_step`` (detached there)."""
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


class Method(nn.Module):
    """Base class of training methods; a method is registered with ``@register_method``.

    Each method has a typed parameter model (``params_cls``, a ``trainer.config.Params``
    defined in the method's file); ``trainer.config`` validates the ``method:`` section
    of a config into it, once (unknown keys, types and ranges).
    """

    name: ClassVar[str]
    params_cls: ClassVar[type[Params]]
    needs_features: ClassVar[bool] = True
    """Whether ``prepare_epoch`` needs the train-set features (clustering methods)."""
    needs_labels: ClassVar[bool] = False
    """Whether the method trains on true identity labels (supervised)."""
    uses_reference: ClassVar[bool] = False
    """Whether the method needs a labelled reference set (``--reference``, MAR)."""

    def __init__(self, encoder: nn.Module, params: Params, info: TrainInfo) -> None:
        super().__init__()
        self.encoder = encoder
        self.params = params
        self.info = info

    @classmethod
    def needs_reference(cls, params: Params) -> bool:
        """Whether a run with ``params`` trains on a reference set (``--reference``):
        required when true, refused when false. Default ``uses_reference``."""
        return cls.uses_reference

    def view_transforms(self, base: Compose) -> dict[str, Callable[..., torch.Tensor]]:
        """Extra views of each target image, by batch key, built from the loop's training
        transform ``base`` (default none)."""
        return {}

    def encoder_param_groups(self) -> dict[str, tuple[list[nn.Parameter], float]]:
        """Encoder parameters that get their own optimiser group: name -> (parameters,
        learning-rate multiplier of ``optim.lr``). Default none."""
        return {}

    def lr_factor(self, group: str, epoch: float) -> float:
        """Factor on optimiser group ``group``'s learning rate at fractional ``epoch``, on
        top of the schedule (default 1)."""
        return 1.0

    def wants_features(self, epoch: int) -> bool:
        """Whether the loop extracts the train-set features before ``prepare_epoch`` of
        ``epoch`` (default ``needs_features``, every epoch). A method that needs them only
        sometimes (selective: once, to fill its per-image memories) overrides this; the
        answer must be the same on every rank (decide from buffers, not randomness)."""
        return self.needs_features

    def streams(self) -> tuple[str, ...]:
        """The batch streams ``training_step`` reads: ``"target"`` and/or ``"reference"``.

        Default ``("target",)``. Without ``"target"`` the loop draws no target batch and
        ignores the plan's labels; the epoch length is then ``train.iters_per_epoch`` or
        about one pass of the reference set.
        """
        return ("target",)

    def init_from_state(self, state: Mapping[str, Any]) -> list[str]:
        """Take what a new run starts from out of another run's saved method state
        (``--init``); returns the names taken.

        Default: every trainable parameter of this method (not the encoder's) whose name
        is in ``state``, shapes checked (``ValueError`` naming the key).
        """
        taken = []
        with torch.no_grad():
            for name, param in self.named_parameters():
                if name.startswith("encoder.") or name not in state:
                    continue
                value = state[name]
                if tuple(value.shape) != tuple(param.shape):
                    raise ValueError(
                        f"--init: method parameter {name} has shape {list(value.shape)} in the "
                        f"checkpoint but {list(param.shape)} here (another reference set?)"
                    )
                param.copy_(value.to(param))
                taken.append(name)
        return taken

    def prepare_epoch(self, context: EpochContext) -> EpochPlan:
        raise NotImplementedError

    def training_step(self, batch: dict[str, dict[str, torch.Tensor]]) -> StepOutput:
        raise NotImplementedError

    @torch.no_grad()
    def after_step(self, batch: dict[str, dict[str, torch.Tensor]], output: StepOutput) -> None:
        """Explicit state updates after the optimiser step (memories); default none."""

    def extra_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters owned by the method (classifiers, discriminators)."""
        return [p for n, p in self.named_parameters() if not n.startswith("encoder.")]
