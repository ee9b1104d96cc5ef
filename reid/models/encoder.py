"""The encoder contract every registered model follows.

* ``model(images[B, 3, H, W]) -> float32[B, D]``: the L2-normalised inference
  embedding, in train and eval mode alike (one return type, no flags).
* ``model.forward_train(images) -> TrainOutput``: the same embedding plus the
  training-only tensors (pre-neck feature, BN feature, parts, patches, attention
  maps). Classifiers, memories and discriminators live in the trainer's methods,
  never in the encoder, so the exported graph is exactly ``forward``.
* ``model.embedding_dim``, ``model.input_size`` (H, W), ``model.preprocess_config()``
  and, for models made by ``build_model``, ``model.build_spec``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reid.preprocess import IMAGENET_MEAN, IMAGENET_STD, PreprocessConfig

from .backbones.base import Backbone

_LIST_LIMIT = 10


@dataclass
class TrainOutput:
    """Everything a training method may need from one forward pass.

    Attributes:
        embedding: ``[B, D]`` L2-normalised inference embedding (== ``model(images)``).
        feature_map: ``[B, C, h, w]`` the last feature map after the method's modules.
        global_feat: ``[B, Cg]`` pooled global feature before the BN neck.
        bn_feat: ``[B, Cg]`` the global feature after the neck (``None`` when the
            method has no global neck, e.g. PatchNet).
        part_feats: ``[B, P, d]`` L2-normalised horizontal-stripe features, or ``None``.
        patch_feats: ``[B, P, d]`` L2-normalised generated-patch features, or ``None``.
        attention: named attention maps / gates (e.g. ``"spatial"``: ``[B, 1, h, w]``).
        aux: other named tensors documented by each model (e.g. PatchNet's ``"theta"``).
    """

    embedding: Tensor
    feature_map: Tensor
    global_feat: Tensor
    bn_feat: Tensor | None = None
    part_feats: Tensor | None = None
    patch_feats: Tensor | None = None
    attention: dict[str, Tensor] = field(default_factory=dict)
    aux: dict[str, Tensor] = field(default_factory=dict)


class ReIDEncoder(nn.Module):
    """Base class: a backbone plus a method head producing one embedding.

    Subclasses set ``embedding_dim`` and implement ``forward_train``; ``forward``
    returns ``forward_train(images).embedding`` so both paths agree exactly.
    """

    def __init__(self, backbone: Backbone, *, input_size: tuple[int, int] = (256, 128)) -> None:
        super().__init__()
        if len(input_size) != 2 or min(input_size) < 8:
            raise ValueError(f"input_size must be (height, width) >= 8, got {input_size}")
        self.backbone = backbone
        self.input_size: tuple[int, int] = (int(input_size[0]), int(input_size[1]))
        self.embedding_dim: int = 0
        self.build_spec: dict[str, Any] = {}

    def forward_train(self, images: Tensor) -> TrainOutput:
        """Embedding plus training-only outputs (see ``TrainOutput``)."""
        raise NotImplementedError

    def pooled_output(
        self, feature_map: Tensor, attention: dict[str, Tensor] | None = None
    ) -> TrainOutput:
        """Pool ``feature_map`` with ``self.pool``, apply the BN neck ``self.head``, L2-normalise.

        The shared tail of every single-branch encoder (baseline, AFF, FRIFM).
        """
        feat = self.pool(feature_map)
        bn_feat = self.head(feat)
        return TrainOutput(
            embedding=F.normalize(bn_feat, dim=1),
            feature_map=feature_map,
            global_feat=feat,
            bn_feat=bn_feat,
            attention=attention or {},
        )

    def forward(self, images: Tensor) -> Tensor:
        """``[B, 3, H, W]`` normalised images -> ``[B, D]`` L2-normalised embeddings."""
        return self.forward_train(images).embedding

    def preprocess_config(self) -> PreprocessConfig:
        """How images must be prepared for this encoder (size, mean/std, RGB, NCHW)."""
        return PreprocessConfig(
            height=self.input_size[0],
            width=self.input_size[1],
            mean=tuple(getattr(self.backbone, "input_mean", IMAGENET_MEAN)),
            std=tuple(getattr(self.backbone, "input_std", IMAGENET_STD)),
        )

    def metadata(self) -> dict[str, Any]:
        """JSON-ready facts a checkpoint or manifest stores next to the weights."""
        return {
            "build_spec": self.build_spec,
            "embedding_dim": self.embedding_dim,
            "input_size": list(self.input_size),
            "normalized": True,
            "preprocess": self.preprocess_config().to_dict(),
            "backbone_weights": getattr(self.backbone, "pretrained_source", "unknown"),
        }


def first_conv(model: nn.Module) -> nn.Conv2d:
    """The first ``Conv2d`` applied to the image (the backbone stem's first conv)."""
    root = getattr(getattr(model, "backbone", model), "stem", model)
    for module in root.modules():
        if isinstance(module, nn.Conv2d):
            return module
    raise ValueError(f"{type(model).__name__} has no Conv2d")


class EncoderStateError(RuntimeError):
    """A state dict does not fit the encoder (written for another architecture?)."""


def _short(keys: list[str]) -> str:
    shown = ", ".join(keys[:_LIST_LIMIT])
    more = len(keys) - _LIST_LIMIT
    return shown + (f", ... (+{more} more)" if more > 0 else "")


def load_encoder_state(model: nn.Module, state_dict: Mapping[str, Tensor]) -> None:
    """Load ``state_dict`` into ``model`` exactly, or explain why it does not fit.

    A leading ``module.`` (DataParallel) is stripped. Raises ``EncoderStateError``
    naming the missing, unexpected and shape-mismatched keys; a missing
    ``num_batches_tracked`` counter (older checkpoints) is tolerated.
    """
    state = {k.removeprefix("module."): v for k, v in state_dict.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k}: checkpoint {list(v.shape)} vs model {list(own[k].shape)}"
        for k, v in state.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or mismatched:
        name = getattr(model, "build_spec", {}).get("name") or type(model).__name__
        problems = [
            f"{len(keys)} {label}: {_short(keys)}"
            for label, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("shape-mismatched", mismatched),
            )
            if keys
        ]
        raise EncoderStateError(
            f"state dict does not fit encoder {name!r} (checkpoint of another "
            "architecture?): " + "; ".join(problems)
        )
    with torch.no_grad():
        model.load_state_dict(state, strict=False)
