"""Which encoders the expensive per-model tests run on.

Every head is composed with every backbone, so the combinations grow as a
product. The full per-model tests (training graph, round trips, export) run on
``covering_models()``: the names that existed before heads and backbones were
composed (trained checkpoints and configs use them), every head on ResNet-18 and
every backbone under the baseline head, so each head and each backbone is covered
at least once, new ones automatically. Every other combination still gets the
cheap build-and-embed check in ``tests/test_models.py``.
"""

from __future__ import annotations

from reid.models import HEADS
from reid.models.backbones import BACKBONES

# Before heads and backbones were composed, each of these names had its own
# factory. Checkpoints store the name and the state dict, so each must still build
# the same keys and shapes: sha256 of the sorted ``[key, shape]`` pairs, and count.
LEGACY_STATE_DICTS = {
    "aff_mobilenetv2": ("80402f1a556ca8d9", 333),
    "aff_resnet18": ("2221c7204ebfab8d", 141),
    "aff_resnet50": ("c946d19ac768045e", 339),
    "efficientnet_lite0": ("a3a6a9d621a6c457", 299),
    "frifm_mobilenetv2": ("2d264f23e7316a20", 371),
    "frifm_resnet18": ("57b0691cac4f97a2", 179),
    "frifm_resnet50": ("ef0272d6d850508a", 377),
    "fusion_mobilenetv2": ("c25873ac3d2defad", 317),
    "fusion_resnet18": ("9cc3e6523220b1f7", 125),
    "mobilenetv2": ("a55529e2f5ea594b", 317),
    "part_mobilenetv2": ("85bbc788906084d8", 375),
    "part_resnet18": ("4b13046364f072ee", 183),
    "part_resnet50": ("e9b727241534c602", 381),
    "patchnet_mobilenetv2": ("cd281729cbb3dd3d", 364),
    "patchnet_resnet18": ("a0044ad0e255c23e", 172),
    "patchnet_resnet50": ("d88c8bc8e28248f7", 370),
    "resnet18": ("f0d24a0b0a84c4ac", 125),
    "resnet50": ("9388030ae5002942", 323),
    "se_resnet50_fusion": ("a4cd817b75a4c113", 387),
}

COVERING_BACKBONE = "resnet18"  # the cheapest backbone that every head supports


def covering_models() -> list[str]:
    """Legacy names + every head on ``COVERING_BACKBONE`` + every backbone's baseline."""
    names = set(LEGACY_STATE_DICTS)
    names |= {head.model_name(COVERING_BACKBONE) for head in HEADS.values()}
    names |= {HEADS["baseline"].model_name(backbone) for backbone in BACKBONES}
    return sorted(names)
