"""Optimiser construction and warm-up + step / cosine learning-rate schedules.

The schedule is a pure function of the (fractional) epoch, set before every step,
so resuming needs no scheduler state beyond the epoch and iteration counters.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import nn

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("step", "cosine", "constant")


def param_groups(
    encoder: nn.Module,
    extra: Iterable[nn.Parameter],
    lr: float,
    backbone_lr_mult: float = 1.0,
    own: Mapping[str, tuple[Sequence[nn.Parameter], float]] | None = None,
) -> list[dict[str, Any]]:
    """Groups ``backbone`` (``lr * backbone_lr_mult``), ``head`` (rest of the encoder),
    ``method`` (the method's own trainable parameters) and one group per entry of ``own``
    (name -> (encoder parameters, lr multiplier), taken out of ``backbone`` / ``head``;
    PAUL's patch generator); frozen parameters and empty groups are left out."""
    own = dict(own or {})
    reserved = {"backbone", "head", "method"} & set(own)
    if reserved:
        raise ValueError(f"parameter group names {sorted(reserved)} are reserved")
    own_ids = {id(p) for params, _ in own.values() for p in params}
    backbone = getattr(encoder, "backbone", None)
    backbone_ids = {id(p) for p in backbone.parameters()} if backbone is not None else set()
    trainable = [p for p in encoder.parameters() if p.requires_grad and id(p) not in own_ids]
    groups = [  # own groups first: logs report the last group's lr (head or method)
        *((name, [p for p in params if p.requires_grad], lr * mult)
          for name, (params, mult) in own.items()),
        ("backbone", [p for p in trainable if id(p) in backbone_ids], lr * backbone_lr_mult),
        ("head", [p for p in trainable if id(p) not in backbone_ids], lr),
        ("method", [p for p in extra if p.requires_grad], lr),
    ]  # fmt: skip
    return [
        {"name": name, "params": params, "lr": group_lr, "initial_lr": group_lr}
        for name, params, group_lr in groups
        if params
    ]


def build_optimizer(
    groups: list[dict[str, Any]],
    name: Literal["adam", "adamw", "sgd"] = "adam",
    *,
    lr: float = 3.5e-4,
    weight_decay: float = 5e-4,
    momentum: float = 0.9,
    nesterov: bool = False,
) -> torch.optim.Optimizer:
    """Adam (L2 weight decay, as cluster-contrast), AdamW or SGD over ``groups``."""
    if not groups:
        raise ValueError("no trainable parameters to optimise")
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(
            groups, lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov
        )
    raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")


class LRSchedule:
    """Learning-rate factor as a function of the fractional epoch ``t``.

    * warm-up (``t < warmup_epochs``): linear from ``warmup_factor`` to 1, multiplied
      into the main schedule;
    * ``step``: ``gamma ** (number of milestones <= epoch)``; the epoch index is an
      integer, so the drop happens at the start of a milestone epoch (MultiStepLR);
    * ``cosine``: ``min + (1 - min) * (1 + cos(pi * p)) / 2``, ``p`` the progress from
      the end of the warm-up to ``total_epochs``;
    * ``constant``: 1.
    """

    def __init__(
        self,
        name: Literal["step", "cosine", "constant"] = "step",
        *,
        total_epochs: int,
        warmup_epochs: float = 0.0,
        warmup_factor: float = 0.01,
        milestones: Sequence[int] = (20,),
        gamma: float = 0.1,
        min_lr_factor: float = 0.0,
    ) -> None:
        if name not in SCHEDULES:
            raise ValueError(f"unknown schedule {name!r}; expected one of {', '.join(SCHEDULES)}")
        self.name = name
        self.total_epochs = total_epochs
        self.warmup_epochs = warmup_epochs
        self.warmup_factor = warmup_factor
        self.milestones = tuple(milestones)
        self.gamma = gamma
        self.min_lr_factor = min_lr_factor

    def factor(self, t: float) -> float:
        """Multiplier of the base learning rate at fractional epoch ``t >= 0``."""
        main = 1.0
        if self.name == "step":
            main = self.gamma ** sum(int(t) >= m for m in self.milestones)
        elif self.name == "cosine":
            span = max(self.total_epochs - self.warmup_epochs, 1e-12)
            progress = min(max((t - self.warmup_epochs) / span, 0.0), 1.0)
            cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
            main = self.min_lr_factor + (1.0 - self.min_lr_factor) * cosine
        if t < self.warmup_epochs:
            alpha = t / self.warmup_epochs
            main *= self.warmup_factor + (1.0 - self.warmup_factor) * alpha
        return main

    def apply(
        self,
        optimizer: torch.optim.Optimizer,
        t: float,
        group_factor: Callable[[str, float], float] | None = None,
    ) -> float:
        """Set every group's lr to ``initial_lr * factor(t)`` (times ``group_factor(name,
        t)`` when given, e.g. ``Method.lr_factor``); returns the factor."""
        factor = self.factor(t)
        for group in optimizer.param_groups:
            extra = group_factor(group.get("name", ""), t) if group_factor is not None else 1.0
            group["lr"] = group["initial_lr"] * factor * extra
        return factor

    def state_dict(self) -> dict[str, Any]:
        """The schedule's settings (it has no running state)."""
        return {
            "name": self.name,
            "total_epochs": self.total_epochs,
            "warmup_epochs": self.warmup_epochs,
            "warmup_factor": self.warmup_factor,
            "milestones": list(self.milestones),
            "gamma": self.gamma,
            "min_lr_factor": self.min_lr_factor,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore: the lr follows from the epoch (kept for API symmetry)."""
