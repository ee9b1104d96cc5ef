"""``python -m trainer``: ``train`` and ``eval`` sub-commands (the only YAML reader's caller).

Train::

    python -m trainer train --config trainer/configs/supervised_synthetic.yaml \\
        --data synthetic:data/synth --out runs/sup [key=value ...] [--resume]

Overrides are dotted keys into the config (``optim.lr=1e-4``) or the short aliases
``epochs=``, ``iters_per_epoch=``, ``batch_size=``, ``device=``, ``seed=``, ``lr=``.
The resolved config is written to ``RUN_DIR/config.yaml``. ``--resume`` continues
from ``RUN_DIR/checkpoint_last.pt`` (with ``RUN_DIR/config.yaml`` unless
``--config`` is given; ``--data`` and ``--reference`` default to the recorded ones).
``--reference FORMAT:PATH`` names the labelled auxiliary set of methods that train on
one (MAR; PAUL's ``pretrain`` stage; ``reference:`` in the config); ``--init CKPT``
starts a new run from another run's encoder weights and method parameters (MAR's main
stage from its ``pretrain`` stage: the agents carry over; PAUL's unsupervised stage,
which needs no ``--reference``, from its pre-training: the patch embedding layers)::

    python -m trainer train --config trainer/configs/mar_pretrain_synthetic.yaml \
        --data synthetic:data/synth --reference synthetic:data/ref --out runs/mar_pre
    python -m trainer train --config trainer/configs/mar_synthetic.yaml \
        --data synthetic:data/synth --reference synthetic:data/ref \
        --init runs/mar_pre/checkpoint_last.pt --out runs/mar
Under ``torchrun --nproc_per_node N -m trainer train ...`` the run is distributed.

Evaluate::

    python -m trainer eval --checkpoint runs/sup/model_best.pt --data synthetic:data/synth --json

prints CMC / mAP / mINP; with ``--json`` one JSON object whose scores (``mAP``,
``mINP``, ``rank1``, ``rank5``, ``rank10``, ...) are fractions in [0, 1], exactly
``reid.metrics.RankResult.as_dict()``. The encoder is rebuilt from the checkpoint
alone. ``--camera-prior W`` adds ``W`` to the distance of every same-camera
query-gallery pair (selective contrast's reference evaluation uses 0.05). Exit
status: 0 success, 2 bad input (message on stderr, no traceback), 1 failure during
training.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from reid.checkpoint import CheckpointError
from reid.clihelp import HelpFormatter
from reid.data import DatasetError, load_dataset
from reid.models import EncoderStateError, UnknownModelError
from trainer.config import ConfigError, TrainerConfig, load_config, read_yaml, save_config
from trainer.methods import UnknownMethodError

USER_ERRORS = (
    ConfigError,
    DatasetError,
    CheckpointError,
    EncoderStateError,
    UnknownModelError,
    UnknownMethodError,
)
LAST = "checkpoint_last.pt"
SCORES = ("mAP", "mINP", "rank1", "rank5", "rank10", "rank20")


class UsageError(ValueError):
    """Bad command-line usage (missing option, run directory conflicts)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trainer",
        description="Train and evaluate re-ID encoders.",
        formatter_class=HelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser(
        "train",
        help="train a method (see trainer/configs/README.md)",
        description="Train a method. Overrides are dotted keys into the config "
        "(optim.lr=1e-4) or the short aliases epochs=, iters_per_epoch=, batch_size=, "
        "device=, seed=, lr=. The resolved config is written to RUN_DIR/config.yaml.",
        formatter_class=HelpFormatter,
    )
    train.add_argument("--config", type=Path, help="YAML config (trainer/configs/<name>.yaml)")
    train.add_argument("--data", help="dataset spec FORMAT:PATH, e.g. market1501:/data/Market")
    train.add_argument(
        "--reference",
        metavar="SPEC",
        help="labelled auxiliary (reference) dataset FORMAT:PATH with identities disjoint "
        "from --data, for methods that use one (mar; paul's stage pretrain), e.g. "
        "msmt17:/data/MSMT17",
    )
    train.add_argument(
        "--init",
        type=Path,
        metavar="CKPT",
        help="start from this checkpoint's encoder weights and method parameters (e.g. "
        "mar's agents or paul's patch embeddings after their pretrain stage); optimiser "
        "and counters start fresh",
    )
    train.add_argument("--out", type=Path, required=True, help="run directory (RUN_DIR)")
    train.add_argument(
        "--resume", action="store_true", help="continue from RUN_DIR/checkpoint_last.pt"
    )
    train.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. optim.lr=1e-4"
    )
    ev = sub.add_parser(
        "eval",
        help="evaluate a checkpoint on a dataset's query/gallery",
        description="Print CMC / mAP / mINP of a checkpoint (or an untrained encoder) on a "
        "dataset's query and gallery splits; --json prints one JSON object of fractions.",
        formatter_class=HelpFormatter,
    )
    source = ev.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="a .pt written by training")
    source.add_argument(
        "--model",
        help="evaluate an untrained encoder instead (direct transfer), e.g. mobilenetv2",
    )
    ev.add_argument(
        "--model-kwargs",
        type=json.loads,
        default={},
        help='with --model: JSON keyword arguments, e.g. \'{"pretrained": "imagenet"}\' '
        "(default: none)",
    )
    ev.add_argument("--data", required=True, help="dataset spec FORMAT:PATH")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1")
    ev.add_argument("--batch-size", type=int, default=128, help="images per forward pass")
    ev.add_argument("--num-workers", type=int, default=2, help="data-loading worker processes")
    ev.add_argument(
        "--metric",
        choices=("cosine", "euclidean", "sqeuclidean"),
        default="cosine",
        help="distance between embeddings",
    )
    ev.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars for the feature extraction (default: when stderr is a terminal)",
    )
    ev.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking")
    ev.add_argument(
        "--camera-prior",
        type=float,
        default=0.0,
        metavar="W",
        help="add W to the distance of every query-gallery pair from the same camera "
        "(the selective-contrast reference evaluates with 0.05; default 0: none)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            return train_command(args)
        return eval_command(args)
    except (*USER_ERRORS, UsageError) as exc:
        return _fail(exc)
    except FloatingPointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _fail(exc: BaseException) -> int:
    if os.environ.get("TRAINER_DEBUG"):
        raise exc
    print(f"error: {exc}", file=sys.stderr)
    return 2


# ----------------------------------------------------------------------------- train


def resolve_train_config(args: argparse.Namespace) -> TrainerConfig:
    """The run's config from ``--config``/``RUN_DIR/config.yaml``, overrides and ``--data``."""
    out: Path = args.out
    if args.resume:
        if not (out / LAST).is_file():
            raise UsageError(
                f"--resume: {out / LAST} not found, so there is no run to continue "
                "(train without --resume to start one)"
            )
        if args.config is not None:
            config = load_config(args.config, args.overrides)
        else:
            saved = out / "config.yaml"
            if not saved.is_file():
                raise UsageError(f"--resume without --config needs {saved}; pass --config")
            config = load_config(None, args.overrides, base=read_yaml(saved))
    else:
        if args.config is None:
            raise UsageError(
                "train needs --config (e.g. trainer/configs/supervised_synthetic.yaml)"
            )
        if (out / LAST).exists():
            raise UsageError(
                f"{out} already holds a run ({LAST}); pass --resume to continue it "
                "or choose another --out"
            )
        config = load_config(args.config, args.overrides)
    spec = args.data or config.data.spec
    if not spec and args.resume and (out / "config.yaml").is_file():
        spec = (read_yaml(out / "config.yaml").get("data") or {}).get("spec")
    if not spec:
        raise UsageError("train needs --data FORMAT:PATH (e.g. synthetic:data/synth)")
    config.data.spec = str(spec)
    if args.reference:
        config.reference.spec = str(args.reference)
    if args.init is not None:
        if args.resume:
            raise UsageError(
                "--init starts a new run from another run's checkpoint; --resume continues "
                "this run: pass one of them"
            )
        if not args.init.is_file():
            raise UsageError(f"--init: checkpoint {args.init} not found")
        config.train.init = str(args.init)
    return config


def train_command(args: argparse.Namespace) -> int:
    """Set up (errors -> exit 2), then train; the process group is always torn down."""
    from trainer import distributed

    try:
        return _train(args)
    finally:
        # The trainer and its hooks form a reference cycle that keeps the DDP reducer
        # (and with it gloo's worker state) alive; freed only at interpreter shutdown,
        # that state aborts the process. Collect it while everything is still whole.
        gc.collect()
        distributed.cleanup()


def _train(args: argparse.Namespace) -> int:
    from trainer import distributed
    from trainer.checkpoint import load_checkpoint
    from trainer.engine import TrainerError, build_trainer
    from trainer.logging_utils import setup_logging

    try:
        config = resolve_train_config(args)
        dataset = load_dataset(config.data.spec)
        reference = load_dataset(config.reference.spec) if config.reference.spec else None
        checkpoint = None
        if args.resume:
            checkpoint = load_checkpoint(args.out / LAST, require_training=True)
            _check_same_method(checkpoint["metadata"], config, args.out / LAST)
        dist = distributed.init_distributed(config.train.device)
        if dist.is_main:
            args.out.mkdir(parents=True, exist_ok=True)
        distributed.barrier()
        logger = setup_logging(args.out, dist.is_main)
        logger.info(dataset.summary())
        trainer = build_trainer(config, dataset, args.out, dist, reference=reference)
        if checkpoint is not None:
            trainer.load_checkpoint(checkpoint)
            logger.info(f"resumed from {args.out / LAST} after epoch {trainer.state.epoch}")
        elif config.train.init:
            taken = trainer.init_from(load_checkpoint(config.train.init))
            logger.info(
                f"initialised the encoder and method parameters "
                f"{', '.join(taken) if taken else '(none)'} from {config.train.init}"
            )
        if dist.is_main:
            save_config(config, args.out / "config.yaml")
    except (*USER_ERRORS, UsageError, TrainerError) as exc:
        return _fail(exc)
    except (ValueError, TypeError) as exc:  # e.g. a model kwarg or method setting
        return _fail(ValueError(f"cannot set up the run: {exc}"))
    try:
        trainer.train()
    except (*USER_ERRORS, TrainerError) as exc:
        return _fail(exc)
    # Rank 0 may still be writing the last checkpoint; tearing gloo down under it
    # aborts the other ranks ("terminate called without an active exception").
    distributed.barrier()
    return 0


def _check_same_method(metadata: dict, config: TrainerConfig, path: Path) -> None:
    method = metadata.get("method")
    if method != config.method.name:
        raise CheckpointError(
            f"{path} was written by method {method!r}, but the config trains "
            f"{config.method.name!r}; a run can only be resumed with its own method "
            "(omit --config to use the run's config.yaml, or start a new --out)"
        )


# ----------------------------------------------------------------------------- eval


def eval_command(args: argparse.Namespace) -> int:
    """Rebuild the encoder from the checkpoint and evaluate on query/gallery."""
    from reid.checkpoint import load_encoder
    from reid.preprocess import PreprocessConfig
    from trainer.distributed import DistInfo
    from trainer.engine import TrainerError, resolve_device
    from trainer.features import evaluate_encoder

    if not math.isfinite(args.camera_prior) or args.camera_prior < 0:
        raise UsageError(f"--camera-prior must be a weight >= 0, got {args.camera_prior}")
    try:
        device = resolve_device(args.device, DistInfo())
    except TrainerError as exc:
        return _fail(exc)
    if args.model is not None:
        encoder, metadata = _untrained_encoder(args.model, args.model_kwargs, device)
    else:
        encoder, metadata = load_encoder(args.checkpoint, device)
    dataset = load_dataset(args.data)
    if not dataset.has_evaluation_splits:
        raise UsageError(f"dataset {args.data} has no query/gallery split to evaluate on")
    print(
        f"embedding {len(dataset.query)} query + {len(dataset.gallery)} gallery images on "
        f"{device}, then ranking ({args.metric}{', re-ranked' if args.rerank else ''}"
        + (f", camera prior {args.camera_prior:g}" if args.camera_prior else "")
        + ")",
        file=sys.stderr,
        flush=True,
    )
    started = time.perf_counter()
    result = evaluate_encoder(
        encoder,
        dataset,
        PreprocessConfig.from_dict(metadata["preprocess"]),
        device,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        metric=args.metric,
        rerank=args.rerank,
        progress=args.progress,
        camera_prior=args.camera_prior,
    )
    print(f"evaluated in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    if args.json:
        scores = {k: float(v) if k in SCORES else int(v) for k, v in result.as_dict().items()}
        print(json.dumps(scores))
    else:
        name = metadata.get("build_spec", {}).get("name")
        source = args.checkpoint or "untrained encoder (direct transfer)"
        print(
            f"{source}: {name}, method {metadata.get('method')}, "
            f"epoch {metadata.get('epoch')}, on {args.data}"
        )
        print(result.format_table())
    return 0


def _untrained_encoder(
    name: str, kwargs: dict, device: torch.device
) -> tuple[torch.nn.Module, dict]:
    """``reid.models.build_model(name, **kwargs)`` in eval mode: direct-transfer evaluation."""
    from reid.models import build_model

    if not isinstance(kwargs, dict):
        raise UsageError(f"--model-kwargs must be a JSON object, got {kwargs!r}")
    try:
        encoder = build_model(name, **kwargs)
    except (UnknownModelError, TypeError, ValueError) as exc:
        raise UsageError(f"cannot build model {name!r}: {exc}") from None
    return encoder.to(device).eval(), encoder.metadata()
