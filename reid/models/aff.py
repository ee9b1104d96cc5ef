"""AFF: attention-guided fine-grained features (the AFF network of AFF_SCL).

From Wu, Yang and Wang, "Unsupervised Person Re-Identification with
Attention-Guided Fine-Grained Features and Symmetric Contrast Learning",
Sensors 22(18):6978, 2022.

On the last feature map (ResNet-50 layer4 without down-sampling):

* global branch: CASAM, CBAM-style hybrid attention (eqs. 1-4: channel gate from
  the max- and avg-pooled map through a shared MLP, then a 7x7 spatial gate),
  fused back with its input as a residual: ``G = F + CASAM(F)``;
* local branch: ``G`` is split along channels into two halves, each re-weighted
  by its own SE-style channel attention (CAM, eqs. 5-6), and the halves are
  concatenated again: ``L = [G1 * CAM1(G1); G2 * CAM2(G2)]``.

Inference embedding: ``L2(BN(pool(L)))``, ``D = C`` (2048 on ResNet-50, the
paper's ``aff_resnet50``; 512 on ResNet-18): the paper's "final people-feature
representation" is the concatenation of the two attended halves.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .attention import CBAM, SEGate
from .backbones.base import Backbone
from .encoder import ReIDEncoder, TrainOutput
from .neck import EmbeddingHead
from .pooling import build_pooling
from .registry import register_head


class AFFModule(nn.Module):
    """CASAM residual on the whole map, then SE gates on the two channel halves."""

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        self.split = channels // 2
        self.casam = CBAM(channels, reduction, kernel_size)
        self.cam = nn.ModuleList(
            [SEGate(self.split, reduction), SEGate(channels - self.split, reduction)]
        )

    def forward(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        refined, spatial = self.casam(x)
        fused = x + refined
        first, second = fused[:, : self.split], fused[:, self.split :]
        gate1, gate2 = self.cam[0](first), self.cam[1](second)
        out = torch.cat([first * gate1, second * gate2], dim=1)
        return out, {"spatial": spatial, "local1": gate1, "local2": gate2}


@register_head("aff")
class AFFEncoder(ReIDEncoder):
    """Backbone -> ``AFFModule`` -> pool -> BN neck -> L2.

    ``TrainOutput.attention``: ``"spatial"`` ``[B, 1, h, w]`` (CASAM spatial gate),
    ``"local1"``/``"local2"`` ``[B, C/2, 1, 1]`` (CAM gates).
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        reduction: int = 16,
        pooling: str = "avg",
        embedding_dim: int | None = None,
        input_size: tuple[int, int] = (256, 128),
    ) -> None:
        super().__init__(backbone, input_size=input_size)
        self.aff = AFFModule(backbone.out_channels, reduction)
        self.pool = build_pooling(pooling)
        self.head = EmbeddingHead(backbone.out_channels, embedding_dim)
        self.embedding_dim = self.head.out_dim

    def forward_train(self, images: Tensor) -> TrainOutput:
        fmap, attention = self.aff(self.backbone(images))
        return self.pooled_output(fmap, attention)
