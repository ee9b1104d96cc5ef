"""ResNet-18/34/50 and SE-ResNet-50 backbones with torchvision parameter names.

The parameters live in modules named exactly as in torchvision's ``ResNet``
(``conv1``, ``bn1``, ``layer1`` ... ``layer4``, blocks with ``conv1``/``bn1``/...
and ``downsample.0``/``downsample.1``), so a torchvision-format checkpoint loads
key for key. ``stem`` and ``stages`` are *views* onto those modules (plain
attributes, not registered submodules), so every parameter appears once in the
state dict, under its torchvision name.

SE-ResNet-50 layout: torchvision ResNet-50 plus one ``se`` submodule per
bottleneck (``layerX.Y.se.fc1`` / ``layerX.Y.se.fc2``, 1x1 convolutions with bias,
reduction 16, applied to the residual branch before the addition as in Hu et al.).
A plain torchvision ResNet-50 checkpoint therefore loads every shared weight and
reports only the ``.se.`` parameters as missing.
"""

from __future__ import annotations

from torch import Tensor, nn

from ...preprocess import IMAGENET_MEAN, IMAGENET_STD
from .base import Backbone
from .registry import register_backbone


def set_views(module: Backbone, stem: nn.Module, stages: list[nn.Module]) -> None:
    """Expose ``stem``/``stages`` without registering them (no duplicate state-dict keys)."""
    object.__setattr__(module, "stem", stem)
    object.__setattr__(module, "stages", nn.ModuleList(stages))


class SqueezeExcitation(nn.Module):
    """Channel attention: global average pool -> 1x1 reduce -> ReLU -> 1x1 expand -> sigmoid."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = channels // reduction
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1)
        self.gate = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        scale = x.mean(dim=(2, 3), keepdim=True)
        scale = self.gate(self.fc2(self.relu(self.fc1(scale))))
        return x * scale


def _downsample(in_channels: int, out_channels: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int = 1, se: bool = False) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.se = SqueezeExcitation(out_channels) if se else None
        self.downsample = _downsample(in_channels, out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.se is not None:
            out = self.se(out)
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (carries the stride, torchvision "v1.5") -> 1x1 expand, x4."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1, se: bool = False) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.se = SqueezeExcitation(out_channels) if se else None
        self.downsample = _downsample(in_channels, out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.se is not None:
            out = self.se(out)
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet(Backbone):
    """A torchvision-layout ResNet trunk (no ``avgpool``/``fc``), split into stem + 4 stages.

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        layers: number of blocks in ``layer1`` ... ``layer4``.
        last_stride: stride of ``layer4`` (1 keeps a 16x-downsampled map, the re-ID default).
        se: add a squeeze-and-excitation module to every block.
    """

    ignored_prefixes: tuple[str, ...] = ("fc.",)
    input_mean: tuple[float, float, float] = IMAGENET_MEAN
    input_std: tuple[float, float, float] = IMAGENET_STD

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: tuple[int, int, int, int],
        *,
        last_stride: int = 1,
        se: bool = False,
    ) -> None:
        super().__init__()
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_channels = 64
        strides = (1, 2, 2, last_stride)
        for index, (width, count, stride) in enumerate(
            zip((64, 128, 256, 512), layers, strides, strict=True)
        ):
            blocks = []
            for i in range(count):
                blocks.append(block(in_channels, width, stride if i == 0 else 1, se=se))
                in_channels = width * block.expansion
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
        expansion = block.expansion
        self.stage_channels = (64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion)
        self.stage_strides = (4, 8, 16, 16 * last_stride)
        set_views(
            self,
            nn.Sequential(self.conv1, self.bn1, self.relu, self.maxpool),
            [self.layer1, self.layer2, self.layer3, self.layer4],
        )


@register_backbone("resnet18")
def resnet18(last_stride: int = 1) -> ResNet:
    """ResNet-18: BasicBlock x [2, 2, 2, 2], 512 output channels."""
    return ResNet(BasicBlock, (2, 2, 2, 2), last_stride=last_stride)


@register_backbone("resnet34")
def resnet34(last_stride: int = 1) -> ResNet:
    """ResNet-34: BasicBlock x [3, 4, 6, 3], 512 output channels."""
    return ResNet(BasicBlock, (3, 4, 6, 3), last_stride=last_stride)


@register_backbone("resnet50")
def resnet50(last_stride: int = 1) -> ResNet:
    """ResNet-50: Bottleneck x [3, 4, 6, 3], 2048 output channels."""
    return ResNet(Bottleneck, (3, 4, 6, 3), last_stride=last_stride)


@register_backbone("se_resnet50")
def se_resnet50(last_stride: int = 1) -> ResNet:
    """SE-ResNet-50: ResNet-50 with squeeze-and-excitation (reduction 16) in every block."""
    return ResNet(Bottleneck, (3, 4, 6, 3), last_stride=last_stride, se=True)
