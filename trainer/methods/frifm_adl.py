"""``frifm_adl``: adversarial disentangling of identity and camera (FRIFM + ADL).

From Chen Yuanmei, Wang Fengsui and Wang Luyao, "Unsupervised person
re-identification of adversarial disentangling learning guided by refined
features"; equation numbers below are that paper's.

On the cluster-contrast base (DBSCAN pseudo-labels, cluster memory, InfoNCE,
``ClusteredMethod``), with two switches:

* **FRIFM**: chosen by the encoder, i.e. the config's ``model.name``:
  ``frifm_resnet50`` (paper) / ``frifm_mobilenetv2`` / ``frifm_resnet18`` for FRIFM on,
  the plain ``resnet50`` / ``mobilenetv2`` / ``resnet18`` for FRIFM off. The method
  itself works with any encoder (the FRIFM modules live in the encoder, not here).
* **ADL** (``adl: true``): the method owns
  - a *camera branch*: ``1x1 conv + BN + ReLU + GAP`` on the encoder's last feature
    map -> camera feature ``z_c``, trained by a camera classifier with
    cross-entropy on the camera ids (free metadata, not identity labels); by
    default it reads a detached map (``camera_detach``), so camera supervision
    never teaches the encoder camera cues;
  - a *statistics network* ``T(z_id, z_c)`` (an MLP on the concatenation) that
    maximises the Jensen-Shannon MI lower bound (eqs. (8)-(9))
    ``I_JS = E_joint[-softplus(-T)] - E_marginal[softplus(T)]``, joint pairs being
    ``(z_id_i, z_c_i)`` and marginal pairs ``(z_id_i, z_c_perm(i))`` (camera features
    shuffled in the batch);
  - the min-max of eq. (10): the loss term is ``-lambda * I_JS`` with the identity
    embedding ``z_id`` passed through a gradient-reversal layer, so one backward pass
    trains ``T`` to raise the bound and the encoder to lower it.

Losses: ``contrast`` (InfoNCE), ``camera`` (``camera_weight * CE``), ``adl``
(``-lambda * I_JS``; lambda = ``adl_weight`` = 0.5, the paper's best of 0.1..0.9).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from trainer.losses import grad_reverse, info_nce_over_memory, jsd_mutual_information
from trainer.memory import ClusterMemory
from trainer.methods._clustered import ClusteredMethod, ClusterParams, gather_batch
from trainer.methods.base import StepOutput, TrainInfo, register_method

__all__ = ["CameraBranch", "FrifmAdl", "FrifmAdlParams", "StatisticsNetwork"]


class FrifmAdlParams(ClusterParams):
    """FRIFM + ADL settings (the FRIFM switch is the encoder: see the module doc).

    ``adl``: adversarial disentangling on/off; ``adl_weight``: lambda;
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


def _feature_channels(encoder: nn.Module) -> int:
    """Channels of ``forward_train(...).feature_map`` (the backbone's last stage)."""
    backbone = getattr(encoder, "backbone", None)
    channels = getattr(backbone, "out_channels", None)
    if channels is None:
        raise ValueError(f"cannot tell the feature-map channels of {type(encoder).__name__}")
    return int(channels)


@register_method
class FrifmAdl(ClusteredMethod):
    """Cluster contrast + camera branch + JS-MI adversarial disentangling."""

    name = "frifm_adl"
    params_cls = FrifmAdlParams

    def __init__(self, encoder: nn.Module, params: FrifmAdlParams, info: TrainInfo) -> None:
        super().__init__(encoder, params, info)
        self.memory = ClusterMemory(info.embedding_dim, params.momentum)
        self.camera: CameraBranch | None = None
        self.statistics: StatisticsNetwork | None = None
        if params.adl:
            if info.num_cameras < 2:
                raise ValueError(f"ADL needs >= 2 cameras, the train set has {info.num_cameras}")
            channels = _feature_channels(encoder)
            self.camera = CameraBranch(channels, params.camera_dim, info.num_cameras)
            self.statistics = StatisticsNetwork(
                info.embedding_dim, params.camera_dim, params.mi_hidden
            )

    def init_memories(self, features: Tensor, labels: Tensor, num_clusters: int) -> None:
        self.memory.init_from(features, labels, num_clusters)

    def mutual_information(self, identity: Tensor, camera: Tensor) -> Tensor:
        """JS MI bound between identity features (through the GRL) and camera features.

        The camera features are detached (the MI term trains only ``T`` and, reversed,
        the encoder); the marginal pairs shuffle them with a random permutation.
        """
        if self.statistics is None:
            raise RuntimeError("mutual_information needs adl: true")
        reversed_identity = grad_reverse(identity, self.params.grl_coeff)
        camera = camera.detach()
        shuffled = camera[torch.randperm(len(camera), device=camera.device)]
        t_joint = self.statistics(reversed_identity, camera)
        t_marginal = self.statistics(reversed_identity, shuffled)
        return jsd_mutual_information(t_joint, t_marginal)

    def training_step(self, batch: dict[str, dict[str, Tensor]]) -> StepOutput:
        images, labels = self.target(batch)
        out = self.encoder.forward_train(images)
        feats = out.embedding
        p = self.params
        losses = {
            "contrast": info_nce_over_memory(feats, labels, self.memory.features, p.temperature)
        }
        extras: dict[str, Tensor] = {}
        if self.camera is not None:
            camids = batch["target"]["camid"].to(feats.device).long()
            if camids.numel() and (
                int(camids.min()) < 0 or int(camids.max()) >= self.info.num_cameras
            ):
                raise ValueError(
                    f"camera ids must be in [0, {self.info.num_cameras}), got "
                    f"{int(camids.min())}..{int(camids.max())}"
                )
            fmap = out.feature_map.detach() if p.camera_detach else out.feature_map
            cam_feat, cam_logits = self.camera(fmap)
            losses["camera"] = p.camera_weight * F.cross_entropy(cam_logits, camids)
            mi = self.mutual_information(feats, cam_feat)
            losses["adl"] = -p.adl_weight * mi
            extras["mi"] = mi.detach()
            extras["camera_acc"] = (cam_logits.argmax(1) == camids).float().mean().detach()
        return StepOutput(losses=losses, features=feats, extras=extras)

    @torch.no_grad()
    def after_step(self, batch: dict[str, dict[str, Tensor]], output: StepOutput) -> None:
        if output.features is None:
            return
        feats = output.features.detach()
        labels = batch["target"]["label"].to(feats.device).long()
        feats, labels = gather_batch(feats, labels)
        self.memory.update(feats, labels)
