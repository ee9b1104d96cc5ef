"""The baseline encoder: backbone -> pooling -> (projection) -> BN neck -> L2.

This is the cluster-contrast / strong-baseline encoder: the inference embedding
is the L2-normalised BN-neck feature. Its models are named by the backbone alone
(``resnet50``: D = 2048, ``resnet18``: D = 512, ``mobilenetv2``: D = 1280, ...).
"""

from __future__ import annotations

from torch import Tensor

from .backbones.base import Backbone
from .encoder import ReIDEncoder, TrainOutput
from .neck import EmbeddingHead
from .pooling import build_pooling
from .registry import register_head


@register_head("baseline", prefix="")
class BaselineEncoder(ReIDEncoder):
    """Global pooling + BN neck on the last feature map; ``D = C`` or ``embedding_dim``."""

    def __init__(
        self,
        backbone: Backbone,
        *,
        pooling: str = "avg",
        embedding_dim: int | None = None,
        input_size: tuple[int, int] = (256, 128),
    ) -> None:
        super().__init__(backbone, input_size=input_size)
        self.pool = build_pooling(pooling)
        self.head = EmbeddingHead(backbone.out_channels, embedding_dim)
        self.embedding_dim = self.head.out_dim

    def forward_train(self, images: Tensor) -> TrainOutput:
        return self.pooled_output(self.backbone(images))
