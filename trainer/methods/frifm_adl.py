"""``frifm_adl``: FRIFM + adversarial disentangling of identity and camera, on IICS.

From Chen Yuanmei, Wang Fengsui and Wang Luyao, "Unsupervised person
re-identification of adversarial disentangling learning guided by refined
features". The paper's baseline is IICS (its baseline row, Market 72.9 mAP, is IICS's
published result), so ``frifm_adl`` is ``iics`` (``trainer.methods.iics``) with two
switches:

* **FRIFM**: chosen by the encoder, i.e. the config's ``model.name``:
  ``frifm_resnet50`` (paper) / ``frifm_mobilenetv2`` / ``frifm_resnet18`` for FRIFM on,
  the plain ``resnet50`` / ``mobilenetv2`` / ``resnet18`` for FRIFM off (the FRIFM
  modules live in the encoder, not here);
* **ADL** (``adl: true``): the camera branch, the statistics network and the
  gradient-reversed JS mutual-information term of ``trainer.methods.adl``, added to
  both IICS stages (the paper does not say which stage; camera nuisance is in both).

With both switches off it is exactly ``iics``. ``frifm_adl_cluster_contrast`` is the
same two switches on the cluster-contrast base instead (our earlier variant; not the
paper's baseline).

Losses: IICS's (``intra``; ``inter`` + ``triplet``), plus ``camera``
(``camera_weight * CE``) and ``adl`` (``-lambda * I_JS``) with ADL on.
"""

from __future__ import annotations

from torch import Tensor, nn

from reid.models.encoder import TrainOutput
from trainer.methods.adl import AdlParams, AdversarialDisentangling
from trainer.methods.base import StepOutput, TrainInfo, register_method
from trainer.methods.cluster_contrast import ClusterContrast, ClusterContrastParams
from trainer.methods.iics import Iics, IicsParams

__all__ = [
    "FrifmAdl",
    "FrifmAdlClusterContrast",
    "FrifmAdlClusterContrastParams",
    "FrifmAdlParams",
]


class FrifmAdlParams(IicsParams, AdlParams):
    """IICS settings + ADL settings (the FRIFM switch is the encoder: see the module doc)."""


class FrifmAdlClusterContrastParams(ClusterContrastParams, AdlParams):
    """Cluster-contrast settings + ADL settings."""


def _with_adl(
    adl: AdversarialDisentangling | None,
    step: tuple[TrainOutput, StepOutput],
    batch: dict[str, dict[str, Tensor]],
) -> StepOutput:
    """The base method's step output with the ADL terms added (when ADL is on)."""
    out, output = step
    if adl is not None:
        losses, extras = adl.losses(out, batch["target"]["camid"])
        output.losses.update(losses)
        output.extras.update(extras)
    return output


def _build_adl(
    encoder: nn.Module, params: AdlParams, info: TrainInfo
) -> AdversarialDisentangling | None:
    if not params.adl:
        return None
    return AdversarialDisentangling(encoder, params, info.embedding_dim, info.num_cameras)


@register_method
class FrifmAdl(Iics):
    """IICS + camera branch + JS-MI adversarial disentangling (the paper's method)."""

    name = "frifm_adl"
    params_cls = FrifmAdlParams

    def __init__(self, encoder: nn.Module, params: FrifmAdlParams, info: TrainInfo) -> None:
        super().__init__(encoder, params, info)
        self.adl = _build_adl(encoder, params, info)

    def training_step(self, batch: dict[str, dict[str, Tensor]]) -> StepOutput:
        return _with_adl(self.adl, self.step_outputs(batch), batch)


@register_method
class FrifmAdlClusterContrast(ClusterContrast):
    """Cluster contrast + the same ADL terms: a variant on another base, not the paper's."""

    name = "frifm_adl_cluster_contrast"
    params_cls = FrifmAdlClusterContrastParams

    def __init__(
        self, encoder: nn.Module, params: FrifmAdlClusterContrastParams, info: TrainInfo
    ) -> None:
        super().__init__(encoder, params, info)
        self.adl = _build_adl(encoder, params, info)

    def training_step(self, batch: dict[str, dict[str, Tensor]]) -> StepOutput:
        return _with_adl(self.adl, self.step_outputs(batch), batch)
