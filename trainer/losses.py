"""Loss functions of the training methods (pure functions, no hidden state).

* :func:`cross_entropy_label_smooth` and :func:`batch_hard_triplet`: the supervised
  identity losses (Szegedy et al. label smoothing; Hermans et al. batch-hard triplet).
* :func:`info_nce_over_memory`: cross-entropy of ``feature . memory^T / T`` (cluster
  contrast, Dai et al.; AFF_SCL eq. (4)/(5)).
* :func:`balance_loss`: AFF_SCL's balanced-L1 loss (eq. (14)) between the mean and
  hard memory slots of each sample's cluster.
* :func:`jsd_mutual_information`: the Jensen-Shannon lower bound of mutual
  information (f-GAN / Deep InfoMax; FRIFM + ADL eq. (8)).
* :class:`GradientReversal` / :func:`grad_reverse`: identity forward, ``-coeff * grad``
  backward (Ganin & Lempitsky), for the adversarial disentangling of FRIFM + ADL.

AFF_SCL: Wu, Yang and Wang, "Unsupervised Person Re-Identification with
Attention-Guided Fine-Grained Features and Symmetric Contrast Learning" (Sensors
2022). FRIFM + ADL: Chen Yuanmei, Wang Fengsui and Wang Luyao, "Unsupervised person
re-identification of adversarial disentangling learning guided by refined features".
Equation numbers are those papers'.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "GradientReversal",
    "balance_loss",
    "batch_hard_triplet",
    "cross_entropy_label_smooth",
    "grad_reverse",
    "info_nce_over_memory",
    "jsd_mutual_information",
]


def cross_entropy_label_smooth(logits: Tensor, targets: Tensor, epsilon: float = 0.1) -> Tensor:
    """Cross-entropy with label smoothing: targets ``(1 - eps) * onehot + eps / C``.

    Args:
        logits: ``[B, C]`` unnormalised class scores.
        targets: ``[B]`` int64 class indices in ``[0, C)``.
        epsilon: smoothing mass spread uniformly over the ``C`` classes.

    Returns:
        The mean loss over the batch (a scalar).
    """
    if not 0.0 <= epsilon < 1.0:
        raise ValueError(f"epsilon must be in [0, 1), got {epsilon}")
    log_probs = F.log_softmax(logits, dim=1)
    nll = -log_probs.gather(1, targets.long().unsqueeze(1)).squeeze(1)
    uniform = -log_probs.mean(dim=1)
    return ((1.0 - epsilon) * nll + epsilon * uniform).mean()


def batch_hard_triplet(
    features: Tensor, labels: Tensor, margin: float | None = 0.3, *, normalize: bool = False
) -> Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017) on Euclidean distances.

    For every anchor: the farthest positive and the closest negative in the batch;
    ``relu(d_ap - d_an + margin)``, or the soft-margin ``softplus(d_ap - d_an)`` when
    ``margin`` is ``None``. Anchors without a positive or without a negative in the
    batch are left out; a batch with no valid anchor gives a zero loss (still
    connected to the graph).

    Args:
        features: ``[B, D]`` features (L2-normalised first when ``normalize``).
        labels: ``[B]`` identity labels.
        margin: hinge margin, or ``None`` for the soft margin.
        normalize: L2-normalise ``features`` before measuring distances.
    """
    if normalize:
        features = F.normalize(features, dim=1)
    dist = _euclidean(features)
    same = labels.view(-1, 1) == labels.view(1, -1)
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    positive = same & ~eye
    negative = ~same
    valid = positive.any(dim=1) & negative.any(dim=1)
    if not bool(valid.any()):
        return features.sum() * 0.0
    hardest_pos = dist.masked_fill(~positive, float("-inf")).amax(dim=1)
    hardest_neg = dist.masked_fill(~negative, float("inf")).amin(dim=1)
    gap = (hardest_pos - hardest_neg)[valid]
    if margin is None:
        return F.softplus(gap).mean()
    return F.relu(gap + margin).mean()


def _euclidean(x: Tensor) -> Tensor:
    """Pairwise Euclidean distances ``[B, B]`` with a safe gradient at 0."""
    sq = (x * x).sum(dim=1)
    d2 = sq.view(-1, 1) + sq.view(1, -1) - 2.0 * (x @ x.t())
    return d2.clamp_min(1e-12).sqrt()


def info_nce_over_memory(
    features: Tensor, labels: Tensor, memory: Tensor, temperature: float = 0.05
) -> Tensor:
    """InfoNCE of each feature against all memory slots: ``CE(f . M^T / T, label)``.

    ``-log(exp(f.m_y / T) / sum_k exp(f.m_k / T))`` averaged over the batch, with
    ``features`` ``[B, D]`` (normally L2-normalised), ``labels`` ``[B]`` in
    ``[0, C)`` and ``memory`` ``[C, D]`` (treated as a constant: it is a buffer).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = features @ memory.t().to(features.dtype) / temperature
    return F.cross_entropy(logits, labels.long())


def balanced_l1(x: Tensor, alpha: float = 0.5, gamma: float = 1.5, beta: float = 1.0) -> Tensor:
    """Elementwise balanced-L1 of ``x = |difference|`` (Pang et al., Libra R-CNN).

    ``alpha / b * (b|x| + 1) * ln(b|x| / beta + 1) - alpha |x|`` for ``|x| < beta`` and
    ``gamma |x| + C`` otherwise, with ``alpha ln(b + 1) = gamma`` and
    ``C = gamma / b - alpha * beta`` so both pieces meet at ``|x| = beta``.
    """
    x = x.abs()
    b = math.exp(gamma / alpha) - 1.0
    inner = alpha / b * (b * x + 1.0) * torch.log(b * x / beta + 1.0) - alpha * x
    outer = gamma * x + gamma / b - alpha * beta
    return torch.where(x < beta, inner, outer)


def balance_loss(
    features: Tensor,
    labels: Tensor,
    mean_memory: Tensor,
    hard_memory: Tensor,
    *,
    alpha: float = 0.9,
    gamma: float = 1.5,
    scale: float = 0.25,
) -> Tensor:
    """AFF_SCL's balance loss ``L_b`` (eq. (14)) between the mean and hard memory slots.

    Eq. (14) is ``L_b(x) = L_b(c - q_hard) = 1/4 * balanced_l1(x)`` (Libra R-CNN,
    ``alpha = 0.9``, ``gamma = alpha * ln(b + 1) = 1.5``, ``beta = 1``). Both memories
    are buffers (no gradient), so we read ``c - q_hard`` through the query, as "the
    two features generated in the storage unit prediction": for sample ``i`` of
    cluster ``y``, ``x_i = f_i . c_y - f_i . h_y`` (the positive logits, before the
    temperature, of the mean and the hard InfoNCE terms) and
    ``L_b = scale * mean_i balanced_l1(x_i)``. It pulls each query to equal
    similarity with its cluster's centre and hard sample.
    """
    labels = labels.long()
    sim_mean = (features * mean_memory[labels].to(features.dtype)).sum(dim=1)
    sim_hard = (features * hard_memory[labels].to(features.dtype)).sum(dim=1)
    return scale * balanced_l1(sim_mean - sim_hard, alpha=alpha, gamma=gamma).mean()


def jsd_mutual_information(t_joint: Tensor, t_marginal: Tensor) -> Tensor:
    """Jensen-Shannon MI lower bound ``E_joint[-softplus(-T)] - E_marginal[softplus(T)]``.

    ``t_joint``: statistics-network scores of pairs drawn from the joint distribution
    (identity and camera feature of the same image); ``t_marginal``: scores of pairs
    from the product of marginals (camera features shuffled within the batch). The
    estimator maximises it; the encoder minimises it (through gradient reversal).
    """
    return (-F.softplus(-t_joint)).mean() - F.softplus(t_marginal).mean()


class GradientReversal(torch.autograd.Function):
    """Identity in the forward pass; multiplies the gradient by ``-coeff`` backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, coeff: float) -> Tensor:
        ctx.coeff = float(coeff)
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:
        return -ctx.coeff * grad_output, None


def grad_reverse(x: Tensor, coeff: float = 1.0) -> Tensor:
    """Apply :class:`GradientReversal` with coefficient ``coeff``."""
    return GradientReversal.apply(x, coeff)
