"""Multi-layer feature fusion: pooled outputs of several backbone stages, concatenated.

From Zhang Baohua, Zhu Siyu, Lv Xiaoqi et al., "Soft multilabel learning and
deep feature fusion for unsupervised person re-identification", Opto-Electronic
Engineering 47(12):190636, 2020. The paper adds squeeze-and-excitation to every
residual block (the ``se_resnet50`` backbone: model ``fusion_se_resnet50``, also
named ``se_resnet50_fusion``) and fuses "multi-level deep features": each chosen
layer's output is global-average-pooled and the pooled vectors are concatenated
into one feature, which is then normalised (section 2.3, step 3). Its ablation
(table 2) finds layer1 + layer3 + layer4 best (41.2 mAP vs 40.0 for layer3 +
layer4), so the default fuses stages ``(0, 2, 3)``. The head reads the backbone's
stages, so it requires them.

Which stages: ``fusion_layers`` names them as the paper does, 1-based (``[1, 3, 4]``
= layer1 + layer3 + layer4 of ResNet); ``fusion_stages`` is the same set 0-based
(the older keyword, kept for saved configs and checkpoints); give one of the two. The
last stage must be among them. On MobileNetV2 "layer k" is the backbone's stage k
(``reid.models.backbones.mobilenetv2``: layer1 = blocks 2-3, 24 channels, stride 4;
layer3 = blocks 7-13, 96 channels, stride 16; layer4 = blocks 14-18 with the 1x1
conv to 1280 channels): the same strides as ResNet's layers.

Inference embedding, ``neck="bn"`` (default): ``L2(BN([pool(layer1); pool(layer3);
pool(layer4)]))``, ``D = 256 + 1024 + 2048 = 3328`` on ResNet-50 (or
``embedding_dim`` after an optional projection); the BN neck standardises each
channel, so the short shallow vector is not drowned by the deep one's scale.
``neck="none"``: ``L2([pool(layer1); pool(layer3); pool(layer4)])``, the MAR
feature of the paper's code (KovenYu/MAR: no BN neck, no projection).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbones.base import STAGES, Backbone
from .encoder import ReIDEncoder, TrainOutput
from .neck import EmbeddingHead
from .pooling import build_pooling
from .registry import register_alias, register_head

DEFAULT_STAGES = (0, 2, 3)


def fusion_stage_indices(
    fusion_layers: Sequence[int] | None, fusion_stages: Sequence[int] | None
) -> tuple[int, ...]:
    """The 0-based stage indices from 1-based ``fusion_layers`` or 0-based ``fusion_stages``.

    Raises ``ValueError`` when both are given, or the set is empty, out of range or
    lacks the last stage.
    """
    if fusion_layers is not None and fusion_stages is not None:
        raise ValueError("give fusion_layers (1-based) or fusion_stages (0-based), not both")
    if fusion_layers is not None:
        layers = sorted({int(v) for v in fusion_layers})
        if not layers or layers[0] < 1 or layers[-1] != 4:
            raise ValueError(
                f"fusion_layers must be layers in 1..4 that include the last layer 4, "
                f"got {list(fusion_layers)}"
            )
        return tuple(v - 1 for v in layers)
    stages = sorted({int(s) for s in (DEFAULT_STAGES if fusion_stages is None else fusion_stages)})
    if not stages or stages[0] < 0 or stages[-1] != 3:
        raise ValueError(
            f"fusion_stages must be indices in 0..3 that include the last stage 3, "
            f"got {list(fusion_stages or [])}"
        )
    return tuple(stages)


@register_head("fusion", requires=[STAGES])
class MultiLevelFusionEncoder(ReIDEncoder):
    """Concatenate the pooled outputs of the chosen stages -> BN neck (or none) -> L2.

    ``TrainOutput.aux`` holds each level's pooled feature as ``"stage1"`` .. ``"stage4"``;
    with ``neck="none"`` ``bn_feat`` is ``None``.
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        fusion_layers: Sequence[int] | None = None,
        fusion_stages: Sequence[int] | None = None,
        neck: Literal["bn", "none"] = "bn",
        pooling: str = "avg",
        embedding_dim: int | None = None,
        input_size: tuple[int, int] = (256, 128),
    ) -> None:
        super().__init__(backbone, input_size=input_size)
        if neck not in ("bn", "none"):
            raise ValueError(f"neck must be 'bn' or 'none', got {neck!r}")
        if neck == "none" and embedding_dim is not None:
            raise ValueError("embedding_dim needs neck='bn' (the projection is part of the neck)")
        self.fusion_stages = fusion_stage_indices(fusion_layers, fusion_stages)
        self.pools = nn.ModuleList(build_pooling(pooling) for _ in self.fusion_stages)
        fused = sum(backbone.stage_channels[s] for s in self.fusion_stages)
        self.head = EmbeddingHead(fused, embedding_dim) if neck == "bn" else None
        self.embedding_dim = fused if self.head is None else self.head.out_dim

    def forward_train(self, images: Tensor) -> TrainOutput:
        maps = self.backbone.forward_stages(images)
        pooled = [pool(maps[s]) for pool, s in zip(self.pools, self.fusion_stages, strict=True)]
        feat = torch.cat(pooled, dim=1)
        bn_feat = self.head(feat) if self.head is not None else None
        return TrainOutput(
            embedding=F.normalize(feat if bn_feat is None else bn_feat, dim=1),
            feature_map=maps[-1],
            global_feat=feat,
            bn_feat=bn_feat,
            aux={f"stage{s + 1}": p for s, p in zip(self.fusion_stages, pooled, strict=True)},
        )


# The paper's model, under its name before heads and backbones were composed.
register_alias("se_resnet50_fusion", head="fusion", backbone="se_resnet50")
