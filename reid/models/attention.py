"""Attention blocks shared by the method heads (CBAM channel/spatial, SE gate).

"AFF" below is Wu, Yang and Wang, "Unsupervised Person Re-Identification with
Attention-Guided Fine-Grained Features and Symmetric Contrast Learning" (Sensors 2022).

Each block returns its *gate* (values in (0, 1)); the caller multiplies, so the
gates can also be returned as training-time attention maps.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _hidden(channels: int, reduction: int) -> int:
    return max(channels // reduction, 8)


class ChannelGate(nn.Module):
    """CBAM channel attention: shared MLP on the avg- and max-pooled map, summed, sigmoid.

    ``[B, C, h, w] -> [B, C, 1, 1]`` (Woo et al. 2018, eq. 2; AFF eq. 1).
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = _hidden(channels, reduction)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(hidden, channels, 1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        avg = self.mlp(x.mean(dim=(2, 3), keepdim=True))
        peak = self.mlp(x.amax(dim=(2, 3), keepdim=True))
        return torch.sigmoid(avg + peak)


class SpatialGate(nn.Module):
    """CBAM spatial attention: ``k x k`` conv over the channel-wise max and mean, sigmoid.

    ``[B, C, h, w] -> [B, 1, h, w]`` (AFF eq. 3, ``k = 7``).
    """

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1)

    def forward(self, x: Tensor) -> Tensor:
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.bn(self.conv(pooled)))


class SEGate(nn.Module):
    """Squeeze-and-excitation gate: avg pool -> FC -> ReLU -> FC -> sigmoid (AFF eq. 5).

    ``[B, C, h, w] -> [B, C, 1, 1]``.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = _hidden(channels, reduction)
        self.fc = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(),
            nn.Conv2d(hidden, channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.fc(x.mean(dim=(2, 3), keepdim=True)))


class CBAM(nn.Module):
    """Channel then spatial attention (``F' = F * Mc(F)``, ``F'' = F' * Ms(F')``).

    ``forward`` returns ``(F'', spatial_gate)``.
    """

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        self.channel = ChannelGate(channels, reduction)
        self.spatial = SpatialGate(kernel_size)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        refined = x * self.channel(x)
        gate = self.spatial(refined)
        return refined * gate, gate
