"""The baseline encoder: backbone -> pooling -> (projection) -> BN neck -> L2.

This is the cluster-contrast / strong-baseline encoder: the inference embedding
is the L2-normalised BN-neck feature.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from .backbones.base import Backbone
from .encoder import ReIDEncoder, TrainOutput, build_encoder
from .neck import EmbeddingHead
from .pooling import build_pooling
from .registry import register_model


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


@register_model
def resnet50(**kwargs: Any) -> BaselineEncoder:
    """ResNet-50 baseline, D = 2048."""
    return build_encoder(BaselineEncoder, "resnet50", **kwargs)


@register_model
def resnet18(**kwargs: Any) -> BaselineEncoder:
    """ResNet-18 baseline, D = 512 (fast tests and CPU training)."""
    return build_encoder(BaselineEncoder, "resnet18", **kwargs)


@register_model
def mobilenetv2(**kwargs: Any) -> BaselineEncoder:
    """MobileNetV2 baseline, D = the backbone's last channels."""
    return build_encoder(BaselineEncoder, "mobilenetv2", **kwargs)


@register_model
def efficientnet_lite0(**kwargs: Any) -> BaselineEncoder:
    """EfficientNet-Lite0 baseline, D = the backbone's last channels."""
    return build_encoder(BaselineEncoder, "efficientnet_lite0", **kwargs)
