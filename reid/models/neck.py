"""BN neck (Luo et al., "Bag of tricks", the strong re-ID baseline)."""

from __future__ import annotations

from torch import Tensor, nn


class BNNeck(nn.BatchNorm1d):
    """``BatchNorm1d`` with the shift frozen at zero.

    Only the scale is learned, so the BN feature stays centred for cosine
    comparison (as in the strong baseline and cluster-contrast).
    """

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)
        self.bias.requires_grad_(False)


class EmbeddingHead(nn.Module):
    """Pooled feature ``[B, C]`` -> optional ``Linear(C, D)`` -> ``BNNeck(D)``.

    With ``embedding_dim=None`` there is no projection (the strong baseline):
    ``out_dim == in_dim``.
    """

    def __init__(self, in_dim: int, embedding_dim: int | None = None) -> None:
        super().__init__()
        if embedding_dim is not None and embedding_dim < 1:
            raise ValueError(f"embedding_dim must be positive, got {embedding_dim}")
        self.out_dim = in_dim if embedding_dim is None else int(embedding_dim)
        self.proj = None
        if embedding_dim is not None:
            self.proj = nn.Linear(in_dim, self.out_dim, bias=False)
            nn.init.kaiming_normal_(self.proj.weight, mode="fan_out")
        self.neck = BNNeck(self.out_dim)

    def forward(self, x: Tensor) -> Tensor:
        if self.proj is not None:
            x = self.proj(x)
        return self.neck(x)
