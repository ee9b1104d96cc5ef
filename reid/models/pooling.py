"""Global pooling of a feature map ``[B, C, h, w] -> [B, C]``: average or GeM."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class AvgPool(nn.Module):
    """Global average pooling."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3))


class GeMPool(nn.Module):
    """Generalised-mean pooling ``(mean(x^p))^(1/p)`` with a learnable ``p`` (Radenović et al.).

    ``p = 1`` is average pooling, ``p -> inf`` max pooling; the cluster-contrast
    baseline starts from ``p = 3``. Inputs are clamped to ``eps`` (post-ReLU maps
    are non-negative; the clamp keeps ``x^p`` defined for any input).
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.full((1,), float(p)))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)

    def extra_repr(self) -> str:
        return f"p={float(self.p.detach()[0]):.3f}, eps={self.eps}"


POOLINGS: dict[str, type[nn.Module]] = {"avg": AvgPool, "gem": GeMPool}


def build_pooling(name: str) -> nn.Module:
    """``"avg"`` or ``"gem"`` -> a module mapping ``[B, C, h, w]`` to ``[B, C]``."""
    if name not in POOLINGS:
        raise ValueError(f"unknown pooling {name!r}; expected one of {', '.join(POOLINGS)}")
    return POOLINGS[name]()
