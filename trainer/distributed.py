"""Process-group setup and the few collectives the loop needs.

``torchrun --nproc_per_node N -m trainer train ...`` sets ``RANK``, ``WORLD_SIZE``
and ``LOCAL_RANK``; :func:`init_distributed` reads them and starts NCCL on GPUs or
gloo on CPU. Without them (plain ``python -m trainer``) everything here is a no-op
on a single process, so the loop has one code path.

How the loop shares work (see ``trainer.engine``):

* train-set / query / gallery features: each rank embeds a contiguous shard of the
  records and :func:`all_gather_rows` reassembles the full matrix on every rank;
* clustering: :func:`run_once` computes on rank 0 and broadcasts the result;
* batches: the P x K sampler gives each rank a disjoint share (``rank``,
  ``world_size``);
* checkpoints, logs and metrics are written by rank 0 only.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job (``world_size == 1``: not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_dist_info() -> DistInfo:
    """Rank, world size and local rank from the torchrun environment (defaults 0, 1, 0)."""
    return DistInfo(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def init_distributed(device: str = "auto", timeout_min: float = 60.0) -> DistInfo:
    """Start the process group when launched by torchrun; return this process's info.

    ``device`` is ``train.device``: NCCL when training on CUDA (each process takes
    the GPU ``LOCAL_RANK``), gloo otherwise.
    """
    info = env_dist_info()
    if not info.enabled or (dist.is_available() and dist.is_initialized()):
        return info
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(
        backend="nccl" if use_cuda else "gloo",
        init_method="env://",
        rank=info.rank,
        world_size=info.world_size,
        timeout=timedelta(minutes=timeout_min),
    )
    return info


def cleanup() -> None:
    """Destroy the process group if one is running."""
    if is_initialized():
        dist.destroy_process_group()


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    """Wait for every rank (no-op on one process)."""
    if is_initialized():
        dist.barrier()


def _collective_device() -> torch.device:
    """NCCL moves CUDA tensors only; gloo takes CPU tensors."""
    if is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_object(obj: object, src: int = 0) -> object:
    """``obj`` from rank ``src`` on every rank (pickled; for small objects)."""
    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=_collective_device())
    return box[0]


def run_once(compute: Callable[[], T]) -> T:
    """Run ``compute`` on rank 0 only and give its (picklable) result to every rank.

    This is ``EpochContext.run_once`` under DDP; an exception on rank 0 is sent to
    the other ranks and raised everywhere, so no rank hangs.
    """
    if not is_initialized() or dist.get_world_size() == 1:
        return compute()
    result: object = None
    if dist.get_rank() == 0:
        try:
            result = compute()
        except Exception as exc:
            result = exc
    result = broadcast_object(result)
    if isinstance(result, Exception):
        raise result
    return result  # type: ignore[return-value]


def all_gather_rows(local: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """Concatenate each rank's ``[counts[r], ...]`` rows, in rank order, on every rank.

    Shards may differ in length (``counts``); they are padded to the longest for the
    collective and trimmed after. Returns a tensor on ``local``'s device.
    """
    if not is_initialized() or dist.get_world_size() == 1:
        return local
    device = _collective_device()
    longest = max(counts)
    padded = torch.zeros((longest, *local.shape[1:]), dtype=local.dtype, device=device)
    padded[: len(local)] = local.to(device)
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, counts, strict=True)]).to(local.device)


def all_reduce_mean(values: dict[str, float]) -> dict[str, float]:
    """Average named scalars over ranks (for logging epoch losses); identity on one process."""
    if not is_initialized() or dist.get_world_size() == 1 or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor(
        [values[k] for k in keys], dtype=torch.float64, device=_collective_device()
    )
    dist.all_reduce(tensor)
    tensor /= dist.get_world_size()
    return dict(zip(keys, tensor.tolist(), strict=True))


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[list[int], slice]:
    """Contiguous near-equal split of ``n`` items: ``(counts per rank, this rank's slice)``."""
    base, extra = divmod(n, world_size)
    counts = [base + (r < extra) for r in range(world_size)]
    start = sum(counts[:rank])
    return counts, slice(start, start + counts[rank])
