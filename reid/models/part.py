"""Global + horizontal-stripe heads, from Pang et al., "Fully Unsupervised Person
Re-Identification via Selective Contrastive Learning" (ACM TOMM, 2022).

As in the reference code (pangbo1997/Unsup_ReID, ``modeling/end2end.py``): a
global feature ``g = L2(BN(Linear(C, C)(GAP(F))))`` and ``P = 8`` local features
``l_i = L2(BN(Linear(C, 256)(AvgPool(stripe_i(F)))))`` on horizontal stripes.

Inference embedding (one vector, so it can be served and indexed like every other
encoder)::

    e = L2([sqrt(w) * g; sqrt((1 - w) / P) * l_1; ...; sqrt((1 - w) / P) * l_P])

Because ``g`` and every ``l_i`` are unit vectors, ``|e| = 1`` before the final
renormalisation and ``cos(e, e') = w * cos(g, g') + (1 - w) * mean_i cos(l_i, l_i')``:
the squared Euclidean form of the paper's test/selection distance
``w * d_global + (1 - w) * mean_i d_local_i`` with ``w = lambda_g = 0.5``.
(The reference evaluation sums unsquared distances, which no single vector
reproduces exactly; the ranking is close and the embedding stays a plain cosine.)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbones.base import Backbone
from .encoder import ReIDEncoder, TrainOutput
from .pooling import build_pooling
from .registry import register_head


def stripe_bounds(height: int, parts: int) -> list[tuple[int, int]]:
    """Row ranges of ``parts`` horizontal stripes (adaptive-pooling bins; they overlap when
    ``height < parts`` or ``height`` is not a multiple)."""
    return [(i * height // parts, -(-(i + 1) * height // parts)) for i in range(parts)]


def _linear_bn(in_dim: int, out_dim: int) -> nn.Sequential:
    linear = nn.Linear(in_dim, out_dim)
    nn.init.kaiming_normal_(linear.weight, mode="fan_out")
    nn.init.zeros_(linear.bias)
    return nn.Sequential(linear, nn.BatchNorm1d(out_dim))


@register_head("part")
class PartEncoder(ReIDEncoder):
    """Global branch + ``num_stripes`` stripe branches on the last feature map.

    Args:
        num_stripes: horizontal stripes ``P`` (paper: 8).
        part_dim: dimension of each stripe feature (paper: 256).
        embedding_dim: dimension of the global feature (paper: ``C``, the default).
        global_weight: ``w`` in the embedding above (paper's ``lambda_g``: 0.5).
        pooling: pooling of the global map and of each stripe.

    ``D = embedding_dim + num_stripes * part_dim`` (ResNet-50: 2048 + 8 * 256 = 4096).
    ``TrainOutput``: ``bn_feat`` the global feature before L2, ``part_feats``
    ``[B, P, part_dim]`` L2-normalised; ``aux["global_embedding"]`` is ``g``.
    :meth:`split_embedding` recovers ``g`` and the ``l_i`` from the embedding alone.
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        num_stripes: int = 8,
        part_dim: int = 256,
        embedding_dim: int | None = None,
        global_weight: float = 0.5,
        pooling: str = "avg",
        input_size: tuple[int, int] = (256, 128),
    ) -> None:
        super().__init__(backbone, input_size=input_size)
        if not 0.0 <= global_weight <= 1.0:
            raise ValueError(f"global_weight must be in [0, 1], got {global_weight}")
        if num_stripes < 1 or part_dim < 1:
            raise ValueError("num_stripes and part_dim must be positive")
        channels = backbone.out_channels
        global_dim = channels if embedding_dim is None else int(embedding_dim)
        self.num_stripes = int(num_stripes)
        self.global_dim = global_dim
        self.part_dim = int(part_dim)
        self.global_scale = math.sqrt(global_weight)
        self.part_scale = math.sqrt((1.0 - global_weight) / num_stripes)
        self.pool = build_pooling(pooling)
        self.global_head = _linear_bn(channels, global_dim)
        self.part_heads = nn.ModuleList(_linear_bn(channels, part_dim) for _ in range(num_stripes))
        self.embedding_dim = global_dim + num_stripes * part_dim

    def forward_train(self, images: Tensor) -> TrainOutput:
        fmap = self.backbone(images)
        feat = self.pool(fmap)
        bn_feat = self.global_head(feat)
        global_emb = F.normalize(bn_feat, dim=1)
        parts = []
        for head, (top, bottom) in zip(
            self.part_heads, stripe_bounds(fmap.shape[2], self.num_stripes), strict=True
        ):
            parts.append(F.normalize(head(self.pool(fmap[:, :, top:bottom])), dim=1))
        embedding = torch.cat(
            [global_emb * self.global_scale] + [p * self.part_scale for p in parts], dim=1
        )
        return TrainOutput(
            embedding=F.normalize(embedding, dim=1),
            feature_map=fmap,
            global_feat=feat,
            bn_feat=bn_feat,
            part_feats=torch.stack(parts, dim=1),
            aux={"global_embedding": global_emb},
        )

    def split_embedding(self, embedding: Tensor) -> tuple[Tensor, Tensor]:
        """``(g [B, global_dim], parts [B, P, part_dim])`` from embeddings ``[B, D]``.

        Undoes the concatenation of ``forward``: each piece is renormalised, so the
        final L2 (a no-op up to rounding, the pieces being unit vectors) does not
        matter. A piece whose weight is 0 (``global_weight`` 0 or 1) is not in the
        embedding and comes back as zeros.
        """
        if embedding.ndim != 2 or embedding.shape[1] != self.embedding_dim:
            raise ValueError(
                f"expected embeddings [B, {self.embedding_dim}], got {list(embedding.shape)}"
            )
        g = embedding[:, : self.global_dim]
        parts = embedding[:, self.global_dim :].reshape(
            len(embedding), self.num_stripes, self.part_dim
        )
        return F.normalize(g, dim=1), F.normalize(parts, dim=2)
