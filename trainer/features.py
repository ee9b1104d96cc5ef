"""Embedding a list of records with the inference preprocessing, and evaluating.

Used by the loop (train-set features for clustering, query/gallery evaluation) and
by ``python -m trainer eval``. Under DDP each rank embeds a contiguous shard and
the shards are all-gathered, so every rank ends with the same full matrix.

``progress`` shows a tqdm bar of the batches on stderr: ``True`` always, ``False``
never, ``None`` when stderr is a terminal (tqdm's ``disable=None``); only the main
process (rank 0) shows one.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from reid.data.base import ImageRecord, ReIDDataset, label_arrays
from reid.data.torch_dataset import make_eval_loader
from reid.metrics import RankResult, evaluate_features
from reid.preprocess import PreprocessConfig
from reid.rerank import RerankParams
from trainer import distributed


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    records: Sequence[ImageRecord],
    config: PreprocessConfig,
    device: torch.device,
    *,
    batch_size: int = 128,
    num_workers: int = 0,
    amp: bool = False,
    channels_last: bool = False,
    shard: bool = True,
    progress: bool | None = False,
    desc: str = "features",
) -> torch.Tensor:
    """L2-normalised ``float32[N, D]`` embeddings of ``records`` (in order), on ``device``.

    The encoder runs in eval mode (its mode is restored afterwards). With ``shard``
    and an initialised process group, each rank embeds ``N / world_size`` records
    and the result is all-gathered (call it on every rank).
    """
    world = distributed.is_initialized() and shard
    rank = torch.distributed.get_rank() if world else 0
    size = torch.distributed.get_world_size() if world else 1
    counts, mine = distributed.shard_bounds(len(records), rank, size)
    local = _embed(
        encoder,
        list(records)[mine],
        config,
        device,
        batch_size,
        num_workers,
        amp,
        channels_last,
        progress if rank == 0 else False,
        desc,
    )
    if world:
        local = distributed.all_gather_rows(local, counts)
    return local


def _embed(
    encoder: nn.Module,
    records: list[ImageRecord],
    config: PreprocessConfig,
    device: torch.device,
    batch_size: int,
    num_workers: int,
    amp: bool,
    channels_last: bool,
    progress: bool | None = False,
    desc: str = "features",
) -> torch.Tensor:
    dim = int(getattr(encoder, "embedding_dim", 0))
    if not records:
        return torch.zeros((0, dim), dtype=torch.float32, device=device)
    loader = make_eval_loader(
        records,
        config,
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    autocast = (
        torch.autocast(device_type="cuda", dtype=torch.float16)
        if amp and device.type == "cuda"
        else nullcontext()
    )
    was_training = encoder.training
    encoder.eval()
    chunks = []
    try:
        disable = None if progress is None else not progress
        bar = tqdm(loader, desc=desc, unit="batch", leave=False, disable=disable)
        for batch in bar:
            images = batch["image"].to(device, non_blocking=True)
            if channels_last and device.type == "cuda":
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast:
                emb = encoder(images)
            chunks.append(F.normalize(emb.float(), dim=1))
    finally:
        encoder.train(was_training)
    return torch.cat(chunks)


def evaluate_encoder(
    encoder: nn.Module,
    dataset: ReIDDataset,
    config: PreprocessConfig,
    device: torch.device,
    *,
    batch_size: int = 128,
    num_workers: int = 0,
    amp: bool = False,
    channels_last: bool = False,
    metric: str = "cosine",
    rerank: bool = False,
    progress: bool | None = False,
    camera_prior: float = 0.0,
) -> RankResult:
    """CMC / mAP / mINP of ``encoder`` on the dataset's query and gallery splits.

    ``camera_prior``: weight added to same-camera query-gallery distances
    (``reid.metrics.add_camera_prior``; 0 = none).

    Under DDP call it on every rank (features are sharded); every rank gets the result.
    """
    if not dataset.has_evaluation_splits:
        raise ValueError(f"dataset {dataset.name!r} has no query/gallery split to evaluate on")
    q_pids, q_camids = label_arrays(dataset.query)
    g_pids, g_camids = label_arrays(dataset.gallery)
    feats = extract_features(
        encoder,
        [*dataset.query, *dataset.gallery],
        config,
        device,
        batch_size=batch_size,
        num_workers=num_workers,
        amp=amp,
        channels_last=channels_last,
        progress=progress,
        desc="eval features",
    )
    feats_np = feats.cpu().numpy().astype(np.float32, copy=False)
    q_feats, g_feats = feats_np[: len(q_pids)], feats_np[len(q_pids) :]
    return evaluate_features(
        q_feats,
        g_feats,
        q_pids,
        g_pids,
        q_camids,
        g_camids,
        metric=metric,  # type: ignore[arg-type]
        rerank=RerankParams() if rerank else None,
        camera_prior=camera_prior,
    )
