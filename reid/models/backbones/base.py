"""The interface every backbone implements, so method modules can attach between stages."""

from __future__ import annotations

import torch
from torch import nn

STAGES = "stages"
"""Backbone feature: ``stem`` + four ``stages`` with ``stage_channels`` / ``stage_strides``.

Every ``Backbone`` below provides it; a backbone that only produces its last map
(overriding ``forward`` and ``out_channels``) registers with ``provides=()`` and is
then composed only with heads that do not require the stages.
"""


class Backbone(nn.Module):
    """A convolutional trunk split into a stem and four stages.

    ``stem`` maps the image to the first feature map; ``stages[i]`` maps stage
    ``i - 1``'s output to stage ``i``'s. Method modules (FRIFM after stages,
    multi-layer fusion of stage 1/3/4, attention on the last map) run the stages
    one by one and insert their own modules in between.

    Attributes:
        stem: module applied to the normalised image ``[B, 3, H, W]``.
        stages: exactly four modules, applied in order.
        stage_channels: output channels of each stage.
        stage_strides: total stride (relative to the input) after each stage.
        pretrained_source: a human-readable description of where the weights came
            from (``"random init"`` when none were loaded).
    """

    stem: nn.Module
    stages: nn.ModuleList
    stage_channels: tuple[int, int, int, int]
    stage_strides: tuple[int, int, int, int]
    pretrained_source: str = "random init"

    @property
    def out_channels(self) -> int:
        return self.stage_channels[-1]

    def forward_stages(self, images: torch.Tensor) -> list[torch.Tensor]:
        """All four stage outputs, shallowest first."""
        x = self.stem(images)
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The last stage's feature map ``[B, C, h, w]``."""
        return self.forward_stages(images)[-1]
