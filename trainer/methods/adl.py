"""Adversarial disentangling of identity and camera (ADL), the part FRIFM + ADL adds.

From Chen Yuanmei, Wang Fengsui and Wang Luyao, "Unsupervised person
re-identification of adversarial disentangling learning guided by refined
features"; equation numbers are that paper's. :class:`AdversarialDisentangling` is
owned by a method (``trainer.methods.frifm_adl``) and gives its loss terms:

* a *camera branch*: ``1x1 conv + BN + ReLU + GAP`` on the encoder's last feature
  map -> camera feature ``z_c``, trained by a camera classifier with cross-entropy on
  the camera ids (free metadata, not identity labels); by default it reads a
  detached map (``camera_detach``), so camera supervision never teaches the encoder
  camera cues;
* a *statistics network* ``T(z_id, z_c)`` (an MLP on the concatenation) that
  maximises the Jensen-Shannon MI lower bound (eqs. (8)-(9))
  ``I_JS = E_joint[-softplus(-T)] - E_marginal[softplus(T)]``, joint pairs being
  ``(z_id_i, z_c_i)`` and marginal pairs ``(z_id_i, z_c_perm(i))`` (camera features
  shuffled in the batch);
* the min-max of eq. (10): the term is ``-lambda * I_JS`` with the identity embedding
  passed through a gradient-reversal layer, so one backward pass trains ``T`` to
  raise the bound and the encoder to lower it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from reid.models.encoder import TrainOutput
from trainer.config import Params
from trainer.losses import grad_reverse, jsd_mutual_information
from trainer.methods.base import check_camera_ids

__all__ = ["AdlParams", "AdversarialDisentangling", "CameraBranch", "StatisticsNetwork"]


class AdlParams(Params):
    """ADL settings.

    ``adl``: on/off; ``adl_weight``: lambda (0.5, the paper's best of 0.1..0.9);
    ``camera_weight``: camera cross-entropy factor; ``grl_coeff``: gradient-reversal
    coefficient; ``camera_dim``/``mi_hidden``: camera feature and T's hidden sizes;
    ``camera_detach``: the camera branch reads a detached feature map.
    """

    adl: bool = True
    adl_weight: float = Field(0.5, ge=0)
    camera_weight: float = Field(1.0, ge=0)
    grl_coeff: float = Field(1.0, ge=0)
    camera_dim: int = Field(256, ge=1)
    mi_hidden: int = Field(512, ge=1)
    camera_detach: bool = True


class CameraBranch(nn.Module):
    """Feature map ``[B, C, h, w]`` -> camera feature ``[B, d]`` and camera logits."""

    def __init__(self, in_channels: int, dim: int, num_cameras: int) -> None:
        super().__init__()
        self.encode = nn.Sequential(
            nn.Conv2d(in_channels, dim, 1, bias=False),
            nn.BatchNorm2d(dim),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(1),
        )
        self.classifier = nn.Linear(dim, num_cameras)

    def forward(self, fmap: Tensor) -> tuple[Tensor, Tensor]:
        feat = self.encode(fmap)
        return feat, self.classifier(feat)


class StatisticsNetwork(nn.Module):
    """``T(a, b)``: an MLP scoring a pair ``(a_i, b_i)`` -> ``[B]`` (Deep InfoMax style)."""

    def __init__(self, dim_a: int, dim_b: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim_a + dim_b, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, 1),
        )

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return self.net(torch.cat([a, b], dim=1)).squeeze(1)


def feature_channels(encoder: nn.Module) -> int:
    """Channels of ``forward_train(...).feature_map`` (the backbone's last stage)."""
    backbone = getattr(encoder, "backbone", None)
    channels = getattr(backbone, "out_channels", None)
    if channels is None:
        raise ValueError(f"cannot tell the feature-map channels of {type(encoder).__name__}")
    return int(channels)


class AdversarialDisentangling(nn.Module):
    """The camera branch and the statistics network, and the ADL loss terms."""

    def __init__(
        self, encoder: nn.Module, params: AdlParams, embedding_dim: int, num_cameras: int
    ) -> None:
        super().__init__()
        if num_cameras < 2:
            raise ValueError(f"ADL needs >= 2 cameras, the train set has {num_cameras}")
        self.params = params
        self.num_cameras = num_cameras
        self.camera = CameraBranch(feature_channels(encoder), params.camera_dim, num_cameras)
        self.statistics = StatisticsNetwork(embedding_dim, params.camera_dim, params.mi_hidden)

    def mutual_information(self, identity: Tensor, camera: Tensor) -> Tensor:
        """JS MI bound between identity features (through the GRL) and camera features.

        The camera features are detached (the MI term trains only ``T`` and, reversed,
        the encoder); the marginal pairs shuffle them with a random permutation.
        """
        reversed_identity = grad_reverse(identity, self.params.grl_coeff)
        camera = camera.detach()
        shuffled = camera[torch.randperm(len(camera), device=camera.device)]
        t_joint = self.statistics(reversed_identity, camera)
        t_marginal = self.statistics(reversed_identity, shuffled)
        return jsd_mutual_information(t_joint, t_marginal)

    def losses(
        self, out: TrainOutput, camids: Tensor
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """``camera`` (weighted CE) and ``adl`` (``-lambda * I_JS``) terms, and extras."""
        camids = camids.to(out.embedding.device).long()
        check_camera_ids(camids, self.num_cameras)
        p = self.params
        fmap = out.feature_map.detach() if p.camera_detach else out.feature_map
        cam_feat, cam_logits = self.camera(fmap)
        mi = self.mutual_information(out.embedding, cam_feat)
        losses = {
            "camera": p.camera_weight * F.cross_entropy(cam_logits, camids),
            "adl": -p.adl_weight * mi,
        }
        extras = {
            "mi": mi.detach(),
            "camera_acc": (cam_logits.argmax(1) == camids).float().mean().detach(),
        }
        return losses, extras
