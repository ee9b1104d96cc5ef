"""How the single ``difficulty`` knob (0..3) maps onto the nuisance strengths.

Each strength is a factor in 0..1 multiplying the corresponding nuisances:

* ``colour``: camera colour shift (white balance, exposure, saturation, contrast,
  gamma). It grows with the cube of the difficulty because it is the nuisance that
  hurts colour features most: a near-grey pixel's hue and a pixel's brightness bin
  flip with a few percent of cast or exposure. Negligible at 1, a few percent per
  channel at 2, clearly visible casts and exposure differences at 3.
* ``imaging``: motion blur, sensor noise, low-resolution cameras, JPEG quality.
* ``geometry``: detector box jitter (scale, offset) and cut-off body parts.
* ``clutter``: occluders (poles, railings, cars, people in front) and bystanders.

Difficulty 0 is nearly clean (no camera shift, well-centred boxes, little noise);
viewpoint, pose, background and the identities themselves vary at every level.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_DIFFICULTY = 3.0
COLOUR_AT_MAX = 0.375


@dataclass(frozen=True, slots=True)
class Strength:
    """Nuisance strengths in 0..1 (see the module docstring)."""

    colour: float
    imaging: float
    geometry: float
    clutter: float


def strength(difficulty: float) -> Strength:
    """The nuisance strengths at ``difficulty`` (0 = nearly clean .. 3 = very hard)."""
    if not 0.0 <= difficulty <= MAX_DIFFICULTY:
        raise ValueError(f"difficulty must be in 0..{MAX_DIFFICULTY:g}, got {difficulty}")
    s = difficulty / MAX_DIFFICULTY
    return Strength(colour=COLOUR_AT_MAX * s**3, imaging=s, geometry=s, clutter=s)
