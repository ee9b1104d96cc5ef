"""FRIFM: feature refinement information fusion modules between backbone stages.

From Chen Yuanmei, Wang Fengsui and Wang Luyao, "Unsupervised person
re-identification of adversarial disentangling learning guided by refined
features" (FRIFM + ADL). The paper's description of the module (section 1.2)
survives only as its abstract: "a feature refinement information fusion module
is designed and embedded into different layers of ResNet50 to enhance the
ability of the network to extract key information". Our reading, one ``FRIFM``
after each chosen stage (so the head requires the backbone's stages):

* information fusion: the previous FRIFM's output is pooled to this stage's grid
  and projected (``1x1 conv + BN``), then added to the stage output
  (``z = x + lateral(prev)``), so shallow detail flows into deeper stages;
* refinement: CBAM channel (avg+max shared MLP) then 7x7 spatial attention on
  ``z``, added back as a residual with a learnable scale:
  ``out = z + gamma * CBAM(z)``.

``gamma`` and the lateral BN scale start at zero, so a freshly built FRIFM model
computes exactly the plain backbone (ImageNet features are not disturbed at step
0) and the modules grow in as training finds them useful. The refined last map is
pooled and passed through the BN neck like the baseline.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import CBAM
from .backbones.base import STAGES, Backbone
from .encoder import ReIDEncoder, TrainOutput
from .neck import EmbeddingHead
from .pooling import build_pooling
from .registry import register_head


class FRIFM(nn.Module):
    """Refine one stage's map with CBAM and fuse the previous stage's refined map into it.

    Args:
        channels: this stage's channels.
        prev_channels: channels of the previous FRIFM's output (``None``: no fusion).
        ratio: spatial down-sampling from the previous FRIFM's map to this one (1, 2, 4..).
        reduction: channel-MLP reduction of the CBAM block.
    """

    def __init__(
        self, channels: int, prev_channels: int | None = None, ratio: int = 1, reduction: int = 16
    ) -> None:
        super().__init__()
        self.ratio = int(ratio)
        self.lateral: nn.Sequential | None = None
        if prev_channels is not None:
            self.lateral = nn.Sequential(
                nn.Conv2d(prev_channels, channels, 1, bias=False), nn.BatchNorm2d(channels)
            )
            nn.init.kaiming_normal_(self.lateral[0].weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(self.lateral[1].weight)
        self.refine = CBAM(channels, reduction)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor, prev: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``x`` this stage's output, ``prev`` the previous FRIFM output -> (map, spatial gate)."""
        z = x
        if self.lateral is not None and prev is not None:
            if self.ratio > 1:
                prev = F.avg_pool2d(prev, self.ratio, self.ratio, ceil_mode=True)
            z = z + self.lateral(prev)
        refined, gate = self.refine(z)
        return z + self.gamma * refined, gate


@register_head("frifm", requires=[STAGES])
class FRIFMEncoder(ReIDEncoder):
    """Backbone with an FRIFM after each stage in ``frifm_stages``; pool + BN neck on the last map.

    Args:
        frifm_stages: zero-based stage indices followed by an FRIFM (default all four).
        reduction: CBAM channel-MLP reduction.
        pooling, embedding_dim, input_size: as for the baseline.

    ``TrainOutput.attention["stageN"]``: the ``[B, 1, h, w]`` spatial gate of the
    FRIFM after stage ``N`` (1-based, as layer1..layer4).
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        frifm_stages: Sequence[int] = (0, 1, 2, 3),
        reduction: int = 16,
        pooling: str = "avg",
        embedding_dim: int | None = None,
        input_size: tuple[int, int] = (256, 128),
    ) -> None:
        super().__init__(backbone, input_size=input_size)
        stages = sorted({int(s) for s in frifm_stages})
        if not stages or stages[0] < 0 or stages[-1] > 3:
            raise ValueError(f"frifm_stages must be indices in 0..3, got {list(frifm_stages)}")
        self.frifm_stages = tuple(stages)
        modules: dict[str, FRIFM] = {}
        prev: int | None = None
        for s in stages:
            channels = backbone.stage_channels[s]
            prev_channels = None if prev is None else backbone.stage_channels[prev]
            ratio = 1 if prev is None else backbone.stage_strides[s] // backbone.stage_strides[prev]
            modules[str(s)] = FRIFM(channels, prev_channels, ratio, reduction)
            prev = s
        self.frifm = nn.ModuleDict(modules)
        self.pool = build_pooling(pooling)
        self.head = EmbeddingHead(backbone.out_channels, embedding_dim)
        self.embedding_dim = self.head.out_dim

    def forward_train(self, images: Tensor) -> TrainOutput:
        x = self.backbone.stem(images)
        prev: Tensor | None = None
        attention: dict[str, Tensor] = {}
        for index, stage in enumerate(self.backbone.stages):
            x = stage(x)
            if index in self.frifm_stages:
                x, attention[f"stage{index + 1}"] = self.frifm[str(index)](x, prev)
                prev = x
        return self.pooled_output(x, attention)
