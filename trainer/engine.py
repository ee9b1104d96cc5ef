"""The one training loop every method runs (docs/ARCHITECTURE.md, "One loop, many methods").

Per epoch::

    features = extract(encoder, train set)            # only if method.wants_features(epoch)
    plan = method.prepare_epoch(EpochContext(...))    # pseudo-labels, memories
    loader = P x K sampler over plan.labels           # this rank's share of batches
                                                      # (+ the reference stream's loader)
    for batch in loader:                              # {"target": ..., "reference": ...}
        out = method.training_step(batch)             # (through DDP when distributed)
        backward(sum(out.losses)), clip, optimizer.step(), lr schedule
        method.after_step(batch, out)                 # explicit memory updates
        hooks.after_step()
    hooks.after_epoch()                               # eval, CSV log, checkpoint

Robustness rules: a plan with no labelled sample (clustering found nothing) keeps
the previous epoch's labels and restores the method state saved before
``prepare_epoch`` (so memories match those labels), or skips the epoch's training
when there are none yet, with one ``NoLabelsWarning`` either way; too few clusters
for P identities per batch lowers P for that epoch with a warning. Randomness is
reseeded from ``(seed, epoch, rank)`` at the start of every epoch and
sampling/augmentation are keyed by ``(seed, epoch)``, so a resumed run continues
exactly like an uninterrupted one.

Reference stream (methods with ``uses_reference``, e.g. MAR): a labelled auxiliary set
(``trainer.reference``) gets its own loader, sampler (``reference.sampler``) and batch
size (``reference.batch_size``), sharded over DDP ranks like the target's, with its own
random streams; each step's batch holds both, ``{"target": ..., "reference": ...}``,
for the target loader's number of steps. A method whose ``streams()`` leave out
``"target"`` (MAR's ``pretrain`` stage) trains on the reference batches alone for
``train.iters_per_epoch`` steps (``null``: about one pass of the reference set).

DDP: the method (which owns the encoder and its extra parameters) is wrapped in
``DistributedDataParallel`` through :class:`StepModule`, whose ``forward`` is
``method.training_step``; gradients of every trainable parameter are averaged.
Buffers are not broadcast (``broadcast_buffers=False``): memories stay identical
because every rank gets the same features and labels and methods update them from
all-gathered batches.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from reid.data.base import ImageRecord, ReIDDataset
from reid.data.samplers import PKCameraSampler, PKSampler, ShuffleSampler
from reid.data.torch_dataset import ImageDataset, KeyedSampler
from reid.data.transforms import build_train_transform
from reid.models import build_model, load_encoder_state
from reid.runtimes import RuntimeUnavailableError
from reid.runtimes import resolve_device as resolve_device_kind
from trainer import distributed
from trainer.checkpoint import (
    build_checkpoint,
    capture_rng_state,
    load_method_state,
    method_state,
    restore_rng_state,
)
from trainer.config import TrainerConfig
from trainer.distributed import DistInfo
from trainer.features import extract_features
from trainer.hooks import HookBase, default_hooks
from trainer.logging_utils import format_values, get_logger, progress_enabled
from trainer.methods import (
    EpochContext,
    Method,
    StepOutput,
    TrainInfo,
    build_method,
    method_class,
)
from trainer.optim import LRSchedule, build_optimizer, param_groups
from trainer.reference import ReferenceSet, build_reference_set

REFERENCE_SEED_OFFSET = 1_000_003
"""Added to ``train.seed`` for the reference stream's sampling and augmentation, so they
do not repeat the target stream's random draws."""


class TrainerError(ValueError):
    """A run cannot start or continue for a reason the user can fix (message says how)."""


class NoLabelsWarning(RuntimeWarning):
    """An epoch's plan had no labelled sample (e.g. every image a DBSCAN outlier)."""


class SmallBatchWarning(RuntimeWarning):
    """Fewer labelled identities than P: the epoch's batches use fewer identities."""


@dataclass
class TrainState:
    """Counters a checkpoint saves so a resumed run continues exactly."""

    epoch: int = 0
    """Completed epochs (the next epoch's index)."""
    global_step: int = 0
    best_map: float = -1.0
    metrics: dict[str, float] = field(default_factory=dict)
    last_labels: np.ndarray | None = None
    """The labels the sampler used last epoch (kept when a plan has none)."""
    log_rows: int = 0
    """Rows of ``metrics.csv`` that belong to the run up to this state."""
    start_metrics: dict[str, float] = field(default_factory=dict)
    """The scores of the model before its first training step (when evaluated)."""
    selection: dict[str, Any] = field(default_factory=dict)
    """The label-free checkpoint choice so far (``trainer.selection``)."""


class StepModule(nn.Module):
    """``forward(batch) = method.training_step(batch)`` as a dict, for DDP to wrap."""

    def __init__(self, method: Method) -> None:
        super().__init__()
        self.method = method

    def forward(self, batch: dict[str, dict[str, torch.Tensor]]) -> dict[str, Any]:
        out = self.method.training_step(batch)
        return {"losses": out.losses, "features": out.features, "extras": out.extras}


def resolve_device(name: str, dist: DistInfo) -> torch.device:
    """``auto`` / ``cpu`` / ``cuda`` as ``reid.runtimes.resolve_device`` (``auto``: CUDA
    when available), ``cuda:N`` keeps its index; under DDP each process takes GPU
    ``LOCAL_RANK``."""
    kind, _, index = name.partition(":")
    try:
        resolved = resolve_device_kind(kind)
    except (ValueError, RuntimeUnavailableError) as exc:
        raise TrainerError(str(exc)) from None
    if resolved != "cuda":
        return torch.device(resolved)
    if dist.enabled:
        return torch.device("cuda", dist.local_rank)
    return torch.device("cuda", int(index) if index.isdigit() else None)


def cpu_threads(setting: int | str) -> int:
    """Intra-op CPU threads for this process: ``auto`` shares the usable cores among the
    processes torchrun started on this machine (``LOCAL_WORLD_SIZE``), at least one.

    Oversubscribed cores (2 DDP processes x 2 threads on 2 cores, or any other job
    beside training) cost far more than they add; ``python -m trainer`` also makes
    waiting OpenMP threads sleep instead of spin (``OMP_WAIT_POLICY=PASSIVE``, see
    ``trainer/__main__.py``).
    """
    if setting != "auto":
        return int(setting)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    return max(1, (cores or 1) // max(1, processes))


def seed_everything(seed: int, *extra: int) -> None:
    """Seed python, numpy and torch (all devices) from ``(seed, *extra)``."""
    import random

    value = int(np.random.SeedSequence([seed, *extra]).generate_state(1)[0])
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


def true_labels(records: Sequence[ImageRecord]) -> tuple[np.ndarray | None, int]:
    """Identity labels mapped to ``0..C-1`` (-1 for unlabeled/junk) and ``C``.

    ``(None, 0)`` when no train record has an identity label.
    """
    pids = sorted({r.pid for r in records if r.pid is not None and r.pid >= 0})
    if not pids:
        return None, 0
    index = {pid: i for i, pid in enumerate(pids)}
    labels = np.array(
        [index.get(r.pid, -1) if r.pid is not None else -1 for r in records], dtype=np.int64
    )
    return labels, len(pids)


class Trainer:
    """Runs the loop for one method, encoder and dataset; see the module docstring."""

    def __init__(
        self,
        *,
        config: TrainerConfig,
        dataset: ReIDDataset,
        encoder: nn.Module,
        method: Method,
        optimizer: torch.optim.Optimizer,
        schedule: LRSchedule,
        device: torch.device,
        dist: DistInfo,
        hooks: Sequence[HookBase] = (),
        labels: np.ndarray | None = None,
        reference: ReferenceSet | None = None,
    ) -> None:
        self.config = config
        self.dataset = dataset
        self.reference = reference
        self.records = list(dataset.train)
        self.camids = np.array([r.camid for r in self.records], dtype=np.int64)
        self.true_labels = labels
        self.encoder = encoder
        self.method = method
        self.optimizer = optimizer
        self.schedule = schedule
        self.device = device
        self.dist = dist
        t = config.train
        self.total_epochs = t.epochs
        self.amp = t.amp and device.type == "cuda"
        self.channels_last = t.channels_last and device.type == "cuda"
        self.num_workers = config.data.num_workers
        self.eval_batch_size = config.eval.batch_size
        self.progress = progress_enabled(t.progress) and dist.is_main
        self.preprocess = encoder.preprocess_config()
        tf = config.data.transforms
        self.transform = build_train_transform(
            self.preprocess, flip=tf.flip, pad=tf.pad, erasing_p=tf.erasing_p,
            color_jitter=tf.color_jitter,
        )  # fmt: skip
        self.views = method.view_transforms(self.transform)
        """Extra views of each target image the method asks for (PAUL: ``positive``)."""
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp)
        self.state = TrainState()
        self.step_module: nn.Module = StepModule(method)
        if dist.enabled and t.sync_bn:
            if device.type == "cuda":
                # In place: the BatchNorm parameters (already in the optimiser) are reused.
                nn.SyncBatchNorm.convert_sync_batchnorm(self.step_module)
            else:
                warnings.warn(
                    "train.sync_bn needs CUDA (SyncBatchNorm runs on GPUs only); "
                    "BatchNorm statistics stay per process on this CPU run",
                    stacklevel=2,
                )
        if dist.enabled:
            self.step_module = nn.parallel.DistributedDataParallel(
                self.step_module,
                device_ids=[device.index] if device.type == "cuda" else None,
                broadcast_buffers=False,
                find_unused_parameters=t.find_unused_parameters,
            )
        self.hooks: list[HookBase] = []
        self.register_hooks(hooks)
        # Per-epoch / per-step values the hooks read.
        self.epoch = 0
        self.steps_this_epoch = 0
        self.step_values: dict[str, float] = {}
        self.epoch_record: dict[str, Any] = {}
        self.loss_keys: list[str] = []
        """Names of the loss terms and scalar extras of the last step (for log lines)."""
        self.is_best = False

    # ------------------------------------------------------------------ hooks

    def register_hooks(self, hooks: Sequence[HookBase]) -> None:
        for hook in hooks:
            hook.trainer = self
            self.hooks.append(hook)

    def _call(self, name: str) -> None:
        for hook in self.hooks:
            getattr(hook, name)()

    # ------------------------------------------------------------------ loop

    def train(self) -> TrainState:
        """Train from ``state.epoch`` to ``train.epochs``; returns the final state."""
        log = get_logger()
        log.info(
            f"training {self.method.name} on {len(self.records)} images, "
            f"epochs {self.state.epoch + 1}..{self.total_epochs}, device {self.device}"
            + (f", {self.dist.world_size} processes" if self.dist.enabled else "")
        )
        if self.state.epoch >= self.total_epochs:
            log.info(
                f"already trained {self.state.epoch} epochs (train.epochs = "
                f"{self.total_epochs}); raise epochs= to continue"
            )
        self._call("before_train")
        for epoch in range(self.state.epoch, self.total_epochs):
            self.run_epoch(epoch)
        self._call("after_train")
        return self.state

    def run_epoch(self, epoch: int) -> None:
        """One epoch: prepare (features, plan), steps, hooks."""
        self.epoch = epoch
        self.is_best = False
        self.steps_this_epoch = 0
        self.epoch_record = {"epoch": epoch + 1}
        seed_everything(self.config.train.seed, epoch, self.dist.rank)
        self._call("before_epoch")
        start = time.perf_counter()
        labels = self.prepare_epoch(epoch)
        self.epoch_record["prepare_time"] = time.perf_counter() - start
        if labels is not None:
            self.train_steps(epoch, labels)
        self.epoch_record["step"] = self.state.global_step
        self.state.epoch = epoch + 1  # completed epochs: the resume point
        self._call("after_epoch")

    def prepare_epoch(self, epoch: int) -> np.ndarray | None:
        """Features + ``method.prepare_epoch``; the labels to sample from, or ``None``."""
        features = None
        start = time.perf_counter()
        extract = self.method.wants_features(epoch)
        if extract:
            features = extract_features(
                self.encoder,
                self.records,
                self.preprocess,
                self.device,
                **self.embed_options,
                progress=self.progress,
                desc=f"epoch {epoch + 1} features",
            )
        feature_seconds = time.perf_counter() - start
        context = EpochContext(
            epoch=epoch,
            records=self.records,
            camids=self.camids,
            true_labels=self.true_labels if self.method.needs_labels else None,
            features=features,
            run_once=distributed.run_once,
        )
        snapshot = method_state(self.method)
        start = time.perf_counter()
        plan = self.method.prepare_epoch(context)
        if extract:
            get_logger().info(
                f"epoch {epoch + 1}: features of {len(self.records)} images in "
                f"{feature_seconds:.1f} s, {self.method.name} pseudo-labels (clustering) in "
                f"{time.perf_counter() - start:.1f} s"
                + (f": {format_values(dict(plan.stats))}" if plan.stats else "")
            )
        del features, context
        labels = np.asarray(plan.labels)
        if labels.shape != (len(self.records),) or not np.issubdtype(labels.dtype, np.integer):
            raise TrainerError(
                f"{self.method.name}.prepare_epoch returned labels of shape {labels.shape} "
                f"and dtype {labels.dtype}; expected {len(self.records)} integers"
            )
        labels = labels.astype(np.int64)
        for param in plan.fresh_parameters:
            self.optimizer.state.pop(param, None)
        self.epoch_record.update({k: float(v) for k, v in plan.stats.items()})
        if "target" not in self.method.streams():  # a reference-only stage: no target batch
            return labels
        if not (labels >= 0).any():
            labels = self._no_labels(epoch, snapshot, plan.stats)
            if labels is None:
                return None
        self.epoch_record["labelled_ratio"] = float((labels >= 0).mean())
        self.state.last_labels = labels
        return labels

    def _no_labels(
        self, epoch: int, snapshot: dict[str, Any], stats: dict[str, float]
    ) -> np.ndarray | None:
        facts = ", ".join(f"{k} {v:g}" for k, v in stats.items())
        what = (
            f"epoch {epoch + 1}: {self.method.name} gave no labelled sample "
            f"({facts + '; ' if facts else ''}clustering found no cluster? a larger "
            "method.eps or smaller method.min_samples gives clusters)"
        )
        previous = self.state.last_labels
        if previous is not None and (previous >= 0).any():
            warnings.warn(
                f"{what}; keeping the previous epoch's labels and method state",
                NoLabelsWarning,
                stacklevel=3,
            )
            load_method_state(self.method, snapshot)
            self.epoch_record["kept_previous_labels"] = 1.0
            return previous
        warnings.warn(
            f"{what} and there are no previous labels: skipping this epoch's training",
            NoLabelsWarning,
            stacklevel=3,
        )
        self.epoch_record["skipped"] = 1.0
        return None

    def steps_per_epoch(self) -> int | None:
        """``train.iters_per_epoch``, or for ``null`` one pass of the whole train set
        (``ceil(N / batch_size)``, labelled or not): a clustering epoch takes as many
        steps however few images its pseudo-labels keep."""
        t = self.config.train
        if t.iters_per_epoch is not None:
            return t.iters_per_epoch
        return max(1, math.ceil(len(self.records) / t.batch_size))

    def make_loader(self, epoch: int, labels: np.ndarray) -> DataLoader:
        """This rank's P x K loader over ``labels`` (P lowered if too few identities)."""
        t = self.config.train
        k = t.num_instances
        local_batch = t.batch_size // self.dist.world_size
        if t.sampler == "random":
            return self._loader(
                ShuffleSampler(
                    labels,
                    batch_size=max(local_batch, 1),
                    seed=t.seed,
                    iters=self.steps_per_epoch(),
                    rank=self.dist.rank,
                    world_size=self.dist.world_size,
                ),
                ImageDataset(
                    self.records, self.transform, labels=labels, seed=t.seed, views=self.views
                ),
                epoch,
                "batch_size",
            )
        if local_batch < k or local_batch % k:
            raise TrainerError(
                f"train.batch_size {t.batch_size} over {self.dist.world_size} processes gives "
                f"{local_batch} images per process, not a multiple of num_instances {k}"
            )
        num_ids = int(np.unique(labels[labels >= 0]).size)
        p = local_batch // k
        if num_ids < p:
            warnings.warn(
                f"epoch {epoch + 1}: only {num_ids} labelled identities/clusters for "
                f"P = {p} per batch; using P = {num_ids} this epoch",
                SmallBatchWarning,
                stacklevel=3,
            )
            p = num_ids
        common = dict(
            num_instances=k,
            batch_size=p * k,
            seed=t.seed,
            iters=self.steps_per_epoch(),
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        if t.sampler == "pk_camera":
            sampler: PKSampler = PKCameraSampler(labels, self.camids, **common)
        else:
            sampler = PKSampler(labels, **common)
        dataset = ImageDataset(
            self.records, self.transform, labels=labels, seed=t.seed, views=self.views
        )
        return self._loader(sampler, dataset, epoch, "batch_size")

    def make_reference_loader(self, epoch: int, iters: int | None) -> DataLoader:
        """This rank's loader over the reference set: ``iters`` batches (``None``: about
        one pass) of ``reference.batch_size / world_size`` images, labels the reference
        identities."""
        if self.reference is None:
            raise TrainerError(
                f"method {self.method.name!r} trains on a reference stream, but no reference "
                "set was given: pass --reference FORMAT:PATH (a labelled dataset)"
            )
        r, t = self.config.reference, self.config.train
        world = self.dist.world_size
        local = r.batch_size // world
        k = r.num_instances if r.sampler == "pk" else 1
        if local < k or local % k:
            raise TrainerError(
                f"reference.batch_size {r.batch_size} over {world} processes gives {local} "
                f"images per process, not a positive multiple of {k}"
            )
        seed = t.seed + REFERENCE_SEED_OFFSET
        labels = self.reference.labels
        share = dict(seed=seed, iters=iters, rank=self.dist.rank, world_size=world)
        sampler: ShuffleSampler | PKSampler
        if r.sampler == "random":
            sampler = ShuffleSampler(labels, batch_size=local, **share)
        else:
            try:
                sampler = PKSampler(labels, num_instances=k, batch_size=local, **share)
            except ValueError as exc:
                raise TrainerError(f"reference sampler: {exc}") from None
        records = self.reference.records
        dataset = ImageDataset(records, self.transform, labels=labels, seed=seed)
        return self._loader(sampler, dataset, epoch, "reference_batch_size")

    def _loader(
        self, sampler: PKSampler | ShuffleSampler, dataset: ImageDataset, epoch: int, key: str
    ) -> DataLoader:
        """A keyed, epoch-set loader of ``sampler.batch_size`` images per batch."""
        keyed = KeyedSampler(sampler)
        keyed.set_epoch(epoch)
        self.epoch_record[key] = sampler.batch_size * self.dist.world_size
        return DataLoader(
            dataset,
            batch_size=sampler.batch_size,
            sampler=keyed,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            drop_last=True,
        )

    def train_steps(self, epoch: int, labels: np.ndarray) -> None:
        """The epoch's optimisation steps."""
        streams = self.method.streams()
        loaders: dict[str, DataLoader] = {}
        if "target" in streams:
            loaders["target"] = self.make_loader(epoch, labels)
        if "reference" in streams:
            iters = len(loaders["target"]) if loaders else self.config.train.iters_per_epoch
            loaders["reference"] = self.make_reference_loader(epoch, iters)
        names = list(loaders)
        self.steps_this_epoch = min(len(loader) for loader in loaders.values())
        self.method.train()
        autocast = (
            torch.autocast(device_type="cuda", dtype=torch.float16) if self.amp else nullcontext()
        )
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        sums: dict[str, float] = {}
        images_seen = 0
        start = time.perf_counter()
        for i, samples in enumerate(zip(*loaders.values(), strict=True)):
            self.schedule.apply(
                self.optimizer, epoch + i / self.steps_this_epoch, self.method.lr_factor
            )
            batch = {name: self._to_device(s) for name, s in zip(names, samples, strict=True)}
            with autocast:
                out = StepOutput(**self.step_module(batch))
            loss = torch.stack([v.float() for v in out.losses.values()]).sum()
            values = {k: float(v.detach()) for k, v in out.losses.items()}
            if not np.isfinite(float(loss.detach())):
                raise FloatingPointError(
                    f"loss is not finite at epoch {epoch + 1}, step {i + 1}: {values} "
                    "(lower optim.lr, or set train.grad_clip)"
                )
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.config.train.grad_clip is not None:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(params, self.config.train.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.method.after_step(batch, out)
            self.state.global_step += 1
            images_seen += sum(len(s["index"]) for s in samples)
            elapsed = time.perf_counter() - start
            lr = self.optimizer.param_groups[-1]["lr"]
            self.step_values = {
                "loss": float(loss.detach()),
                **values,
                **{k: float(v) for k, v in out.extras.items() if v.numel() == 1},
                "lr": lr,
                "img_s": images_seen * self.dist.world_size / max(elapsed, 1e-9),
            }
            for key, value in self.step_values.items():
                if key not in ("lr", "img_s"):
                    sums[key] = sums.get(key, 0.0) + value
            self.loss_keys = [k for k in self.step_values if k not in ("loss", "lr", "img_s")]
            self._call("after_step")
        steps = max(self.steps_this_epoch, 1)
        means = distributed.all_reduce_mean({k: v / steps for k, v in sums.items()})
        self.epoch_record.update(means)
        self.epoch_record["lr"] = self.optimizer.param_groups[-1]["lr"]
        self.epoch_record["img_s"] = self.step_values.get("img_s", 0.0)
        self.epoch_record["train_time"] = time.perf_counter() - start

    def _to_device(self, sample: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        stream = {k: v.to(self.device, non_blocking=True) for k, v in sample.items()}
        if self.channels_last:
            stream["image"] = stream["image"].contiguous(memory_format=torch.channels_last)
        return stream

    # ------------------------------------------------------------------ state

    def init_from(self, checkpoint: dict[str, Any]) -> list[str]:
        """Start from another run's checkpoint (``--init``): its encoder weights and what
        ``method.init_from_state`` takes from its method state; returns those names.

        The optimiser, schedule, counters and RNG stay fresh: this is a new run.
        """
        load_encoder_state(self.encoder, checkpoint["encoder"])
        training = checkpoint.get("training") or {}
        return self.method.init_from_state(training.get("method") or {})

    @property
    def embed_options(self) -> dict[str, Any]:
        """How this run embeds images (train-set features, evaluation, selection)."""
        return {
            "batch_size": self.eval_batch_size,
            "num_workers": self.num_workers,
            "amp": self.amp,
            "channels_last": self.channels_last,
        }

    def training_state(self) -> dict[str, Any]:
        """The checkpoint's ``"training"`` section (see ``trainer.checkpoint``)."""
        s = self.state
        return {
            "method": method_state(self.method),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "grad_scaler": self.scaler.state_dict(),
            "rng": capture_rng_state(),
            "epoch": s.epoch,
            "global_step": s.global_step,
            "best_map": s.best_map,
            "metrics": dict(s.metrics),
            "last_labels": None if s.last_labels is None else torch.from_numpy(s.last_labels),
            "log_rows": s.log_rows,
            "start_metrics": dict(s.start_metrics),
            "selection": dict(s.selection),
            "world_size": self.dist.world_size,
        }

    def checkpoint_dict(self, with_training: bool = True) -> dict[str, Any]:
        """A complete checkpoint of the current state."""
        return build_checkpoint(
            self.encoder,
            method=self.method.name,
            epoch=self.state.epoch,
            metrics=self.state.metrics,
            config=self.config.to_dict(),
            training=self.training_state() if with_training else None,
        )

    def load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore encoder, method, optimiser, scaler, counters and RNG from a checkpoint."""
        meta = checkpoint["metadata"]
        if meta.get("method") != self.method.name:
            raise TrainerError(
                f"the checkpoint was written by method {meta.get('method')!r}, but this config "
                f"trains {self.method.name!r}; resume with the run's own config "
                "(its config.yaml) or start a new run in another --out"
            )
        training = checkpoint["training"]
        load_encoder_state(self.encoder, checkpoint["encoder"])
        load_method_state(self.method, training["method"])
        # Moments come from the checkpoint; hyper-parameters (lr, weight decay) from the
        # config, so an override such as lr= on --resume takes effect.
        fresh = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        try:
            self.optimizer.load_state_dict(training["optimizer"])
        except ValueError as exc:
            raise TrainerError(f"optimizer state does not fit this run: {exc}") from None
        for group, settings in zip(self.optimizer.param_groups, fresh, strict=True):
            group.update(settings)
        self.scaler.load_state_dict(training["grad_scaler"])
        self.schedule.load_state_dict(training["scheduler"])
        labels = training.get("last_labels")
        self.state = TrainState(
            epoch=int(training["epoch"]),
            global_step=int(training["global_step"]),
            best_map=float(training["best_map"]),
            metrics=dict(training.get("metrics", {})),
            last_labels=None if labels is None else labels.numpy().astype(np.int64),
            log_rows=int(training.get("log_rows", 0)),
            start_metrics=dict(training.get("start_metrics", {})),
            selection=dict(training.get("selection", {})),
        )
        restore_rng_state(training["rng"])


def build_trainer(
    config: TrainerConfig,
    dataset: ReIDDataset,
    out_dir: Path | None,
    dist: DistInfo | None = None,
    hooks: Sequence[HookBase] | None = None,
    reference: ReIDDataset | None = None,
) -> Trainer:
    """Assemble encoder, method, optimiser, schedule and hooks from a typed config.

    ``reference``: the loaded reference dataset (``reference.spec``), checked and
    labelled by ``trainer.reference.build_reference_set`` against ``dataset``.
    """
    dist = dist or DistInfo()
    device = resolve_device(config.train.device, dist)
    torch.set_num_threads(cpu_threads(config.train.threads))
    if not dataset.train:
        raise TrainerError(f"dataset {dataset.name!r} has no training images")
    labels, num_classes = true_labels(dataset.train)
    name = config.method.name
    if method_class(name).needs_labels and labels is None:
        unlabeled = sum(r.pid is None for r in dataset.train)
        raise TrainerError(
            f"method {name!r} trains on identity labels, but the train split of "
            f"{dataset.name!r} is unlabeled ({unlabeled} images without an identity); "
            "use an unsupervised method (e.g. cluster_contrast) or a labelled dataset"
        )
    cls = method_class(name)
    wants_reference = cls.needs_reference(config.method.params)
    if wants_reference and reference is None:
        raise TrainerError(
            f"method {name!r} trains on a labelled reference set beside the target: pass "
            "--reference FORMAT:PATH (identities disjoint from the target's, e.g. "
            "msmt17:/data/MSMT17, or a second synthetic set)"
        )
    if reference is not None and not wants_reference:
        stage = " with these settings" if cls.uses_reference else ""
        raise TrainerError(
            f"method {name!r}{stage} does not use a reference set; drop --reference "
            "(reference.spec) or choose a method that does (mar, paul's stage pretrain)"
        )
    ref_set = None
    if reference is not None:
        ref_set = build_reference_set(reference, config.reference.splits, dataset)
        get_logger().info(ref_set.summary())
    seed_everything(config.train.seed)
    encoder = build_model(config.model.name, **config.model.kwargs)
    info = TrainInfo(
        num_train=len(dataset.train),
        num_cameras=int(max(r.camid for r in dataset.train)) + 1,
        num_classes=num_classes or None,
        embedding_dim=int(encoder.embedding_dim),
        device=device,
        epochs=config.train.epochs,
        num_reference=0 if ref_set is None else len(ref_set.records),
        num_reference_classes=0 if ref_set is None else ref_set.num_classes,
    )
    if config.train.channels_last and device.type == "cuda":
        encoder = encoder.to(memory_format=torch.channels_last)
    encoder.to(device)
    method = build_method(name, encoder, config.method.params, info).to(device)
    o = config.optim
    groups = param_groups(
        encoder, method.extra_parameters(), o.lr, o.backbone_lr_mult,
        own=method.encoder_param_groups(),
    )  # fmt: skip
    optimizer = build_optimizer(
        groups, o.name, lr=o.lr, weight_decay=o.weight_decay, momentum=o.momentum,
        nesterov=o.nesterov,
    )  # fmt: skip
    s = config.schedule
    schedule = LRSchedule(
        s.name,
        total_epochs=config.train.epochs,
        warmup_epochs=s.warmup_epochs,
        warmup_factor=s.warmup_factor,
        milestones=s.milestones,
        gamma=s.gamma,
        min_lr_factor=s.min_lr_factor,
    )
    if hooks is None:
        hooks = (
            default_hooks(
                out_dir,
                progress=progress_enabled(config.train.progress),
                eval_every=config.eval.every,
                eval_metric=config.eval.metric,
                rerank=config.eval.rerank,
                checkpoint_every=config.checkpoint.every,
                keep_last=config.checkpoint.keep_last,
                camera_prior=config.eval.camera_prior,
                select_every=config.checkpoint.select_every
                if config.checkpoint.select == "cluster_quality"
                else 0,
            )
            if out_dir is not None
            else []
        )
    return Trainer(
        config=config,
        dataset=dataset,
        encoder=encoder,
        method=method,
        optimizer=optimizer,
        schedule=schedule,
        device=device,
        dist=dist,
        hooks=hooks,
        labels=labels,
        reference=ref_set,
    )
