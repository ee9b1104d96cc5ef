"""PatchNet: patch generation network + per-patch features (PAUL).

From Yang, Yu, Wu and Zheng, "Patch-based Discriminative Feature Learning for
Unsupervised Person Re-identification", CVPR 2019.

As in the authors' code (QizeYang/PAUL, ``src/models/patchnet.py``): a
localisation network on the last feature map regresses ``P = 6`` affine
transforms, initialised to six equal horizontal stripes (zero weights, bias
``[1, 0, 0, 0, 1/6, (2i - 5)/6]``); each transform samples a patch of the map with
``affine_grid`` / ``grid_sample`` (``align_corners=False``, bilinear); each patch
is average-pooled and mapped by a ``1x1 conv C -> 256 + BN``, then L2-normalised.

Inference embedding: ``L2([x_1; ...; x_6])``, the concatenated patch features
(PAUL's test feature) renormalised, so ``cos(e, e') = mean_m cos(x_m, x'_m)``;
``D = 6 * 256 = 1536``.

``patch_init="random"`` starts the generator from ``P`` random boxes instead (the
paper's Table 4 "Randomly" scheme, kept fixed by the method; drawn once from
``patch_seed``, so the encoder stays deterministic and exportable): each box spans a
height of ``1/P``-``3/P`` and a width of half to all of the map, placed uniformly inside it.

Deviation: PAUL's localisation trunk is ``conv3x3 2048 -> 4096 + BN + ReLU + max
pool`` then ``FC 4096 -> 512 -> 36`` (about 80 M parameters); the default here is
``loc_channels=256``, ``loc_hidden=128`` for CPU training; pass ``4096`` / ``512``
for the paper's size. Sampling uses border padding (PAUL: zeros), so the outer
half-rows of the top and bottom stripes are not blended with zeros.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbones.base import Backbone
from .encoder import ReIDEncoder, TrainOutput
from .pooling import build_pooling
from .registry import register_head


def stripe_thetas(parts: int) -> Tensor:
    """``[parts, 2, 3]`` affine transforms selecting ``parts`` equal horizontal stripes."""
    thetas = torch.zeros(parts, 2, 3)
    thetas[:, 0, 0] = 1.0
    thetas[:, 1, 1] = 1.0 / parts
    thetas[:, 1, 2] = torch.tensor([(2 * i + 1 - parts) / parts for i in range(parts)])
    return thetas


PATCH_INITS = ("stripes", "random")


def random_thetas(parts: int, seed: int = 0) -> Tensor:
    """``[parts, 2, 3]`` affine transforms of random boxes inside the map (see the module
    docstring), the same for the same ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(parts, 4, generator=gen)
    # x_in = s x_out + t on [-1, 1]: a box of the fraction s of the map, centred at t
    sy = ((1.0 + 2.0 * u[:, 0]) / parts).clamp(max=1.0)
    sx = 0.5 + 0.5 * u[:, 1]
    ty = (2.0 * u[:, 2] - 1.0) * (1.0 - sy)
    tx = (2.0 * u[:, 3] - 1.0) * (1.0 - sx)
    thetas = torch.zeros(parts, 2, 3)
    thetas[:, 0, 0], thetas[:, 0, 2] = sx, tx
    thetas[:, 1, 1], thetas[:, 1, 2] = sy, ty
    return thetas


class PatchGenerator(nn.Module):
    """Localisation network -> ``[B, P, 2, 3]`` affine transforms (starts at stripes, or at
    ``init`` transforms ``[P, 2, 3]``)."""

    def __init__(
        self,
        channels: int,
        parts: int = 6,
        loc_channels: int = 256,
        loc_hidden: int = 128,
        init: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.parts = parts
        self.localization = nn.Sequential(
            nn.Conv2d(channels, loc_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(loc_channels),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        nn.init.kaiming_normal_(self.localization[0].weight, mode="fan_out", nonlinearity="relu")
        self.fc_loc = nn.Sequential(
            nn.Linear(loc_channels, loc_hidden), nn.ReLU(), nn.Linear(loc_hidden, parts * 6)
        )
        nn.init.zeros_(self.fc_loc[2].weight)
        with torch.no_grad():
            start = stripe_thetas(parts) if init is None else init
            self.fc_loc[2].bias.copy_(start.reshape(-1))

    def forward(self, fmap: Tensor) -> Tensor:
        hidden = self.localization(fmap).mean(dim=(2, 3))
        return self.fc_loc(hidden).reshape(-1, self.parts, 2, 3)


def sample_patch(fmap: Tensor, theta: Tensor) -> Tensor:
    """Resample ``fmap [B, C, h, w]`` through ``theta [B, 2, 3]`` onto an ``h x w`` grid."""
    grid = F.affine_grid(theta, list(fmap.shape), align_corners=False)
    return F.grid_sample(fmap, grid, mode="bilinear", padding_mode="border", align_corners=False)


@register_head("patchnet")
class PatchNetEncoder(ReIDEncoder):
    """Backbone -> patch generator -> ``P`` patch features -> concatenated embedding.

    Args:
        num_patches: ``P`` (paper: 6; its table 4 compares 4, 6 and 8).
        patch_dim: dimension of each patch feature (paper: 256).
        loc_channels, loc_hidden: localisation-network width (see module docstring).
        pooling: pooling of each patch.

    ``TrainOutput``: ``patch_feats [B, P, patch_dim]`` L2-normalised, ``global_feat``
    the pooled last map (no neck: ``bn_feat`` is ``None``), ``aux["theta"]``
    ``[B, P, 2, 3]`` the generated transforms, ``aux["patch_raw"] [B, P, patch_dim]`` the
    patch features before the L2 normalisation (PAUL's supervised classifiers read them).
    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        num_patches: int = 6,
        patch_dim: int = 256,
        loc_channels: int = 256,
        loc_hidden: int = 128,
        pooling: str = "avg",
        patch_init: str = "stripes",
        patch_seed: int = 0,
        input_size: tuple[int, int] = (256, 128),
    ) -> None:
        super().__init__(backbone, input_size=input_size)
        if num_patches < 1 or patch_dim < 1:
            raise ValueError("num_patches and patch_dim must be positive")
        if patch_init not in PATCH_INITS:
            raise ValueError(
                f"patch_init must be one of {', '.join(PATCH_INITS)}, got {patch_init!r}"
            )
        channels = backbone.out_channels
        self.num_patches = int(num_patches)
        self.patch_dim = int(patch_dim)
        start = random_thetas(num_patches, patch_seed) if patch_init == "random" else None
        self.generator = PatchGenerator(channels, num_patches, loc_channels, loc_hidden, start)
        self.pool = build_pooling(pooling)
        self.down = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, patch_dim, 1), nn.BatchNorm2d(patch_dim))
            for _ in range(num_patches)
        )
        self.embedding_dim = num_patches * patch_dim

    def forward_train(self, images: Tensor) -> TrainOutput:
        fmap = self.backbone(images)
        theta = self.generator(fmap)
        raw, patches = [], []
        for index, down in enumerate(self.down):
            pooled = self.pool(sample_patch(fmap, theta[:, index]))
            feat = down(pooled[:, :, None, None]).flatten(1)
            raw.append(feat)
            patches.append(F.normalize(feat, dim=1))
        return TrainOutput(
            embedding=F.normalize(torch.cat(patches, dim=1), dim=1),
            feature_map=fmap,
            global_feat=fmap.mean(dim=(2, 3)),
            patch_feats=torch.stack(patches, dim=1),
            aux={"theta": theta, "patch_raw": torch.stack(raw, dim=1)},
        )
