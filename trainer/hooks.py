"""Hooks: what happens around the loop (as fast-reid's ``HookBase``).

A hook gets ``self.trainer`` (the running :class:`trainer.engine.Trainer`) and may
implement ``before_train``, ``before_epoch``, ``after_step``, ``after_epoch`` and
``after_train``. Hooks run in list order; the default list is
``[ProgressHook, EvalHook, SelectionHook, LogHook, CheckpointHook]`` so an epoch's CSV
row holds its evaluation and label-free score, and its checkpoint records how many rows
were written (``trainer.selection``: the label-free checkpoint choice).

What hooks read from the trainer: ``epoch`` (0-based index of the running epoch),
``state`` (``TrainState``: completed epochs, global step, best mAP, ...),
``step_values`` (the last step's loss terms, lr, images/s), ``epoch_record`` (the
epoch's row: mean losses, lr, stats, timings; hooks add to it) and ``dist``.
Only the main process writes files; collective work (feature extraction for
evaluation) runs on every rank.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from trainer.checkpoint import save_checkpoint
from trainer.features import evaluate_encoder
from trainer.logging_utils import CsvLog, Progress, format_values, get_logger

if TYPE_CHECKING:
    from trainer.engine import Trainer

EPOCH_CHECKPOINT = re.compile(r"^checkpoint_epoch(\d+)\.pt$")
LAST_CHECKPOINT = "checkpoint_last.pt"
BEST_CHECKPOINT = "model_best.pt"


class HookBase:
    """Base class: every method is an optional no-op."""

    trainer: Trainer

    def before_train(self) -> None:
        """Once, before the first epoch (also when resuming)."""

    def before_epoch(self) -> None:
        """Before the epoch's feature extraction and ``prepare_epoch``."""

    def after_step(self) -> None:
        """After each optimiser step and the method's ``after_step``."""

    def after_epoch(self) -> None:
        """After the epoch's last step."""

    def after_train(self) -> None:
        """Once, after the last epoch."""


class ProgressHook(HookBase):
    """A tqdm bar per epoch with the loss terms and images/s (main process only)."""

    def __init__(self, enabled: bool) -> None:
        self.progress = Progress(enabled)
        self._epoch: int | None = None

    def after_step(self) -> None:
        t = self.trainer
        if not t.dist.is_main:
            return
        if self._epoch != t.epoch:  # first step of the epoch: its length is known now
            self.progress.close()
            self.progress.start(t.epoch + 1, t.steps_this_epoch)
            self._epoch = t.epoch
        self.progress.update(t.step_values)

    def after_epoch(self) -> None:
        self.progress.close()

    def after_train(self) -> None:
        self.progress.close()


class EvalHook(HookBase):
    """Query/gallery evaluation every ``every`` epochs and after the last one.

    Adds ``mAP``, ``mINP``, ``rank1/5/10`` (fractions in [0, 1], as
    ``RankResult.as_dict``) to the epoch record and tracks the best mAP. A fresh run also
    scores its starting model (``state.start_metrics``) and ends by comparing the final
    scores with it: a warning when training ended below its start.
    """

    def __init__(
        self,
        every: int,
        *,
        metric: str = "cosine",
        rerank: bool = False,
        camera_prior: float = 0.0,
    ) -> None:
        self.every = every
        self.metric = metric
        self.rerank = rerank
        self.camera_prior = camera_prior
        self._warned = False

    def due(self) -> bool:
        t = self.trainer
        last = t.epoch + 1 == t.total_epochs
        return self.every > 0 and ((t.epoch + 1) % self.every == 0 or last)

    def available(self) -> bool:
        if self.trainer.dataset.has_evaluation_splits:
            return True
        if not self._warned:
            get_logger().info("no query/gallery split: evaluation skipped")
            self._warned = True
        return False

    def evaluate(self) -> dict[str, float]:
        t = self.trainer
        result = evaluate_encoder(
            t.encoder,
            t.dataset,
            t.preprocess,
            t.device,
            **t.embed_options,
            metric=self.metric,
            rerank=self.rerank,
            progress=t.progress,
            camera_prior=self.camera_prior,
        )
        return {k: float(v) for k, v in result.as_dict().items() if k in SCORE_KEYS}

    def before_train(self) -> None:
        """Score the starting model once (a fresh run with evaluation on), so the end of
        training can say whether it improved on where it started."""
        t = self.trainer
        if self.every <= 0 or t.state.epoch > 0 or t.state.start_metrics:
            return
        if not self.available():
            return
        t.state.start_metrics = self.evaluate()
        get_logger().info("before training: " + format_scores(t.state.start_metrics))

    def after_epoch(self) -> None:
        t = self.trainer
        if not self.due() or not self.available():
            return
        start = time.perf_counter()
        scores = self.evaluate()
        t.epoch_record.update(scores)
        t.epoch_record["eval_time"] = time.perf_counter() - start
        t.state.metrics = scores
        t.is_best = scores["mAP"] > t.state.best_map
        if t.is_best:
            t.state.best_map = scores["mAP"]

    def after_train(self) -> None:
        t = self.trainer
        start, final = t.state.start_metrics, t.state.metrics
        if not start or "mAP" not in final or not t.dist.is_main:
            return
        gap = 100 * (final["mAP"] - start["mAP"])
        line = (
            f"final mAP {100 * final['mAP']:.2f}% vs {100 * start['mAP']:.2f}% before "
            f"training ({gap:+.2f} points)"
        )
        if gap < 0:
            get_logger().warning(
                line + ": training ended BELOW the model it started from; on this data the "
                "recipe erodes the start (fewer steps, a lower learning rate or frozen early "
                "stages may help), or keep the starting model"
            )
        else:
            get_logger().info(line)


def format_scores(scores: dict[str, float]) -> str:
    return " ".join(f"{k} {100 * scores[k]:.2f}%" for k in SCORE_KEYS if k in scores)


SCORE_KEYS = ("mAP", "mINP", "rank1", "rank5", "rank10")


class LogHook(HookBase):
    """``metrics.csv`` (one row per epoch), ``steps.csv`` (one per step), a log line."""

    def __init__(self, out_dir: Path, step_log: bool = True) -> None:
        self.out_dir = Path(out_dir)
        self.step_log = step_log
        self.epochs: CsvLog | None = None
        self.steps: CsvLog | None = None

    def before_train(self) -> None:
        if not self.trainer.dist.is_main:
            return
        self.epochs = CsvLog(self.out_dir / "metrics.csv")
        self.steps = CsvLog(self.out_dir / "steps.csv") if self.step_log else None
        # Rows written after the checkpoint we resumed from belong to a lost future.
        self.epochs.truncate(self.trainer.state.log_rows)
        if self.steps is not None:
            self.steps.truncate(self.trainer.state.global_step)

    def after_step(self) -> None:
        t = self.trainer
        if self.steps is not None and t.dist.is_main:
            row = {"epoch": t.epoch + 1, "step": t.state.global_step, **t.step_values}
            self.steps.append(row)

    def after_epoch(self) -> None:
        t = self.trainer
        if not t.dist.is_main or self.epochs is None:
            return
        record = dict(t.epoch_record)
        self.epochs.append(record)
        t.state.log_rows = len(self.epochs)
        get_logger().info(epoch_line(record, t.epoch + 1, t.total_epochs, t.loss_keys))


def epoch_line(record: dict, epoch: int, total: int, loss_keys: Sequence[str] = ()) -> str:
    """``epoch 3/50 | loss 1.2 (ce 0.9 triplet 0.3) | lr 3.50e-04 | 410.0 img/s | ...``."""
    timing = ("prepare_time", "train_time", "eval_time")
    fixed = {"epoch", "step", "loss", "lr", "img_s", "batch_size", *timing, *SCORE_KEYS}
    parts = [f"epoch {epoch}/{total}"]
    if "loss" in record:
        terms = {k: record[k] for k in loss_keys if k in record}
        parts.append(f"loss {record['loss']:.4g} ({format_values(terms)})")
        parts.append(f"lr {record['lr']:.2e}")
        parts.append(f"{record.get('img_s', 0.0):.1f} img/s")
    else:
        parts.append("no training step")
    stats = {k: v for k, v in record.items() if k not in fixed and k not in loss_keys}
    if stats:
        parts.append(format_values(stats))
    if "mAP" in record:
        parts.append(" ".join(f"{k} {100 * record[k]:.2f}%" for k in SCORE_KEYS if k in record))
    parts.append(f"{sum(float(record.get(k, 0.0)) for k in timing):.1f} s")
    return " | ".join(parts)


class CheckpointHook(HookBase):
    """``checkpoint_last.pt`` every epoch, ``checkpoint_epoch{N}.pt`` every ``every``
    epochs (newest ``keep_last`` kept; ``None`` keeps all), ``model_best.pt`` (encoder
    and metadata only) whenever the evaluated mAP improves."""

    def __init__(self, out_dir: Path, every: int = 10, keep_last: int | None = 2) -> None:
        self.out_dir = Path(out_dir)
        self.every = every
        self.keep_last = keep_last

    def after_epoch(self) -> None:
        t = self.trainer
        if not t.dist.is_main:
            return
        data = t.checkpoint_dict(with_training=True)
        save_checkpoint(data, self.out_dir / LAST_CHECKPOINT)
        number = t.epoch + 1
        if self.every and self.keep_last != 0 and number % self.every == 0:
            save_checkpoint(data, self.out_dir / f"checkpoint_epoch{number}.pt")
            self._prune()
        if t.is_best:
            save_checkpoint(t.checkpoint_dict(with_training=False), self.out_dir / BEST_CHECKPOINT)

    def _prune(self) -> None:
        if self.keep_last is None:
            return
        numbered = sorted(
            (int(m.group(1)), p)
            for p in self.out_dir.iterdir()
            if (m := EPOCH_CHECKPOINT.match(p.name))
        )
        for _, path in numbered[: max(len(numbered) - self.keep_last, 0)]:
            path.unlink(missing_ok=True)


def default_hooks(
    out_dir: Path,
    *,
    progress: bool,
    eval_every: int,
    eval_metric: str,
    rerank: bool,
    checkpoint_every: int,
    keep_last: int | None,
    camera_prior: float = 0.0,
    select_every: int = 0,
) -> list[HookBase]:
    """The standard hook list (order matters, see the module docstring)."""
    from trainer.selection import SelectionHook

    return [
        ProgressHook(progress),
        EvalHook(eval_every, metric=eval_metric, rerank=rerank, camera_prior=camera_prior),
        SelectionHook(out_dir, select_every),
        LogHook(out_dir),
        CheckpointHook(out_dir, checkpoint_every, keep_last),
    ]
