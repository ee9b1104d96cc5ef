"""Test-only training methods for the loop tests (not a test module).

``FakeMemory`` exercises everything the loop must carry for a clustering method
without depending on DBSCAN: train-set features, ``run_once``, a buffer memory
whose size changes with the labels, a momentum update in ``after_step`` from
all-gathered batches, an extra trainable parameter and torch randomness in the
step. Its ``mode`` decides the "clusters":

* ``true``: the true identities (deterministic), ``two``: only two clusters,
* ``outliers``: every sample -1, every epoch,
* ``first_only``: true identities in epoch 0, all -1 afterwards.

Run as a script (under torchrun) it registers the fakes and calls the trainer CLI.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.config import Params
from trainer.methods import METHODS
from trainer.methods.base import EpochContext, EpochPlan, Method, StepOutput, TrainInfo


class FakeMemoryParams(Params):
    mode: str = "true"
    momentum: float = 0.5
    temperature: float = 0.1


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _gather(x: Tensor) -> Tensor:
    if _world() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(_world())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def _check_same_on_all_ranks(x: Tensor, what: str) -> None:
    if _world() == 1:
        return
    sums = _gather(x.double().sum().reshape(1))
    if not torch.allclose(sums, sums[:1].expand_as(sums)):
        raise AssertionError(f"{what} differs between ranks: {sums.tolist()}")


class FakeMemory(Method):
    name = "fake_memory"
    params_cls = FakeMemoryParams
    needs_features = True

    def __init__(self, encoder: nn.Module, params: FakeMemoryParams, info: TrainInfo) -> None:
        super().__init__(encoder, params, info)
        dim = info.embedding_dim
        self.register_buffer("memory", torch.zeros(0, dim))
        self.proj = nn.Linear(dim, dim)
        self.prepared_epochs: list[int] = []

    def prepare_epoch(self, context: EpochContext) -> EpochPlan:
        assert context.true_labels is None, "unsupervised methods must not see true labels"
        assert context.features is not None and context.features.shape[0] == len(context.records)
        _check_same_on_all_ranks(context.features, "train features")
        pids = np.array([r.pid for r in context.records])
        mode, epoch = self.params.mode, context.epoch

        def compute() -> np.ndarray:
            labels = np.unique(pids, return_inverse=True)[1].astype(np.int64)
            if mode == "two":
                labels = np.where(labels < 2, labels, -1)
            if mode == "outliers" or (mode == "first_only" and epoch > 0):
                labels = np.full(len(pids), -1, dtype=np.int64)
            return labels

        labels = context.run_once(compute)
        num = int(labels.max(initial=-1) + 1)
        feats = context.features.float()
        memory = feats.new_zeros(num, feats.shape[1])
        keep = torch.from_numpy(labels >= 0)
        if num:
            memory.index_add_(0, torch.from_numpy(labels[labels >= 0]), feats[keep])
        self.memory = F.normalize(memory, dim=1)
        self.prepared_epochs.append(epoch)
        return EpochPlan(labels=labels, stats={"num_clusters": float(num)})

    def training_step(self, batch: dict[str, dict[str, Tensor]]) -> StepOutput:
        stream = batch["target"]
        out = self.encoder.forward_train(stream["image"])
        noise = 1e-3 * torch.randn_like(out.embedding)  # torch RNG must be restored on resume
        feats = F.normalize(self.proj(out.embedding) + noise, dim=1)
        logits = feats @ self.memory.t() / self.params.temperature
        loss = F.cross_entropy(logits, stream["label"].long())
        return StepOutput(losses={"nce": loss}, features=feats)

    @torch.no_grad()
    def after_step(self, batch: dict[str, dict[str, Tensor]], output: StepOutput) -> None:
        feats = _gather(output.features.detach())
        labels = _gather(batch["target"]["label"].long())
        m = self.params.momentum
        for label in labels.unique():
            mean = feats[labels == label].mean(0)
            self.memory[label] = F.normalize(m * self.memory[label] + (1 - m) * mean, dim=0)
        _check_same_on_all_ranks(self.memory, "memory")
        weights = torch.cat([p.detach().flatten() for p in self.parameters()])
        _check_same_on_all_ranks(weights, "weights after the optimiser step (DDP gradient sync)")


def register() -> None:
    """Add the fakes to ``trainer.methods.METHODS`` (tests prefer ``monkeypatch.setitem``)."""
    METHODS[FakeMemory.name] = FakeMemory


if __name__ == "__main__":
    from trainer.cli import main

    register()
    sys.exit(main())
