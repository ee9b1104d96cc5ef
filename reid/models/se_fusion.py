"""Multi-layer feature fusion: pooled outputs of several backbone stages, concatenated.

From Zhang Baohua, Zhu Siyu, Lv Xiaoqi et al., "Soft multilabel learning and
deep feature fusion for unsupervised person re-identification", Opto-Electronic
Engineering 47(12):190636, 2020. The paper adds squeeze-and-excitation to every
residual block (the ``se_resnet50`` backbone: model ``fusion_se_resnet50``, also
named ``se_resnet50_fusion``) and fuses "multi-level deep features": each chosen
layer's output is global-average-pooled and the pooled vectors are concatenated
into one feature, which is then normalised (section 2.3, step 3). Its ablation
(table 2) finds layer1 + layer3 + layer4 best (41.2 mAP vs 40.0 for layer3 +
layer4), so ``fusion_stages`` defaults to stages ``(0, 2, 3)``. The head reads
the backbone's stages, so it requires them.

Inference embedding: ``L2(BN([pool(layer1); pool(layer3); pool(layer4)]))``,
``D = 256 + 1024 + 2048 = 3328`` on ResNet-50 (or ``embedding_dim`` after an
optional projection). The BN neck standardises each channel, so the short
shallow vector is not drowned by the deep one's scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbones.base import STAGES, Backbone
from .encoder import ReIDEncoder, TrainOutput
from .neck import EmbeddingHead
from .pooling import build_pooling
from .registry import register_alias, register_head


@register_head("fusion", requires=[STAGES])
class MultiLevelFusionEncoder(ReIDEncoder):
    """Concatenate the pooled outputs of ``fusion_stages`` -> BN neck -> L2.

    ``TrainOutput.aux`` holds each level's pooled feature as ``"stage1"`` .. ``"stage4"``.
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        fusion_stages: Sequence[int] = (0, 2, 3),
        pooling: str = "avg",
        embedding_dim: int | None = None,
        input_size: tuple[int, int] = (256, 128),
    ) -> None:
        super().__init__(backbone, input_size=input_size)
        stages = sorted({int(s) for s in fusion_stages})
        if not stages or stages[0] < 0 or stages[-1] != 3:
            raise ValueError(
                f"fusion_stages must be indices in 0..3 that include the last stage 3, "
                f"got {list(fusion_stages)}"
            )
        self.fusion_stages = tuple(stages)
        self.pools = nn.ModuleList(build_pooling(pooling) for _ in stages)
        fused = sum(backbone.stage_channels[s] for s in stages)
        self.head = EmbeddingHead(fused, embedding_dim)
        self.embedding_dim = self.head.out_dim

    def forward_train(self, images: Tensor) -> TrainOutput:
        maps = self.backbone.forward_stages(images)
        pooled = [pool(maps[s]) for pool, s in zip(self.pools, self.fusion_stages, strict=True)]
        feat = torch.cat(pooled, dim=1)
        bn_feat = self.head(feat)
        return TrainOutput(
            embedding=F.normalize(bn_feat, dim=1),
            feature_map=maps[-1],
            global_feat=feat,
            bn_feat=bn_feat,
            aux={f"stage{s + 1}": p for s, p in zip(self.fusion_stages, pooled, strict=True)},
        )


# The paper's model, under its name before heads and backbones were composed.
register_alias("se_resnet50_fusion", head="fusion", backbone="se_resnet50")
