"""Persistent identity attributes: what makes one synthetic pedestrian recognisable.

Colours are drawn from skewed, realistic palettes (dark tops and jeans dominate,
vivid colours are a minority) so that many identities are confusable, as in real
re-ID data. Every colour is jittered a little per identity, so two people who both
wear a "black jacket" still differ slightly.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

Color = tuple[int, int, int]
"""An RGB colour, 0..255 per channel."""

# (weight, RGB). Weights need not sum to one; they are normalised on use.
UPPER_PALETTE: tuple[tuple[float, Color], ...] = (
    (0.20, (24, 24, 27)),  # black
    (0.10, (58, 58, 62)),  # charcoal
    (0.07, (118, 118, 120)),  # grey
    (0.05, (180, 180, 178)),  # light grey
    (0.12, (228, 228, 222)),  # white
    (0.10, (30, 38, 68)),  # navy
    (0.05, (45, 85, 160)),  # blue
    (0.04, (140, 172, 210)),  # light blue
    (0.03, (72, 95, 132)),  # denim
    (0.04, (196, 178, 142)),  # beige
    (0.03, (92, 64, 44)),  # brown
    (0.03, (105, 102, 64)),  # olive / khaki
    (0.03, (34, 68, 46)),  # dark green
    (0.04, (178, 32, 38)),  # red
    (0.02, (98, 26, 40)),  # burgundy
    (0.02, (222, 140, 168)),  # pink
    (0.015, (222, 196, 52)),  # yellow
    (0.015, (222, 118, 40)),  # orange
    (0.015, (98, 60, 128)),  # purple
    (0.015, (62, 148, 72)),  # green
)

LOWER_PALETTE: tuple[tuple[float, Color], ...] = (
    (0.28, (26, 26, 29)),  # black
    (0.22, (55, 78, 120)),  # jeans
    (0.10, (34, 43, 70)),  # dark jeans
    (0.08, (60, 60, 64)),  # charcoal
    (0.06, (120, 120, 122)),  # grey
    (0.08, (182, 162, 120)),  # khaki / beige
    (0.06, (32, 38, 62)),  # navy
    (0.03, (226, 224, 216)),  # white
    (0.04, (90, 64, 46)),  # brown
    (0.03, (122, 150, 188)),  # light jeans
    (0.02, (96, 96, 60)),  # olive
    (0.01, (170, 40, 44)),  # red
)

SHOE_PALETTE: tuple[tuple[float, Color], ...] = (
    (0.38, (22, 22, 24)),  # black
    (0.25, (230, 230, 226)),  # white
    (0.10, (110, 110, 112)),  # grey
    (0.15, (86, 58, 38)),  # brown
    (0.05, (36, 44, 80)),  # dark blue
    (0.03, (170, 40, 40)),  # red
    (0.04, (190, 172, 140)),  # beige
)

BAG_PALETTE: tuple[tuple[float, Color], ...] = (
    (0.45, (25, 25, 28)),  # black
    (0.15, (64, 64, 68)),  # dark grey
    (0.10, (32, 40, 72)),  # navy
    (0.10, (104, 70, 44)),  # brown
    (0.05, (170, 36, 40)),  # red
    (0.05, (48, 90, 170)),  # blue
    (0.05, (50, 110, 60)),  # green
    (0.05, (216, 140, 164)),  # pink
)

SKIN_TONES: tuple[tuple[float, Color], ...] = (
    (0.25, (236, 200, 176)),
    (0.25, (222, 180, 150)),
    (0.20, (196, 150, 116)),
    (0.14, (166, 118, 88)),
    (0.10, (128, 88, 64)),
    (0.06, (92, 62, 44)),
)

HAIR_COLORS: tuple[tuple[float, Color], ...] = (
    (0.45, (20, 18, 18)),  # black
    (0.25, (50, 35, 26)),  # dark brown
    (0.12, (96, 66, 42)),  # brown
    (0.08, (188, 158, 100)),  # blond
    (0.05, (150, 150, 150)),  # grey
    (0.05, (128, 60, 32)),  # auburn
)

LOGO_PALETTE: tuple[tuple[float, Color], ...] = (
    (0.3, (235, 235, 230)),
    (0.2, (200, 30, 40)),
    (0.15, (30, 30, 32)),
    (0.1, (230, 200, 40)),
    (0.1, (40, 90, 190)),
    (0.15, (60, 160, 80)),
)

HAIR_STYLES = ("bald", "short", "medium", "long", "ponytail")
PATTERNS = ("solid", "stripes", "checks", "logo")
LOWER_KINDS = ("trousers", "shorts", "skirt")
HATS = ("cap", "beanie")
CARRIED = ("handbag", "shopping_bag", "umbrella")
LOGO_SHAPES = ("circle", "square", "bar", "triangle")


@dataclass(frozen=True, slots=True)
class Identity:
    """Everything that stays the same for one person across images and cameras.

    Side conventions: ``+1`` is the person's left, ``-1`` the person's right.
    """

    height: float  # person height as a fraction of a well-fitted box, ~0.86..1.0
    build: float  # width factor, ~0.85..1.2
    head: float  # head size factor, ~0.9..1.1
    torso: float  # torso length factor, ~0.93..1.07
    skin: Color
    hair_color: Color
    hair_style: str
    upper_color: Color
    upper_pattern: str
    pattern_color: Color
    logo_shape: str
    long_sleeves: bool
    open_jacket: bool
    inner_color: Color
    lower_kind: str
    lower_color: Color
    legwear: Color  # visible legs below shorts / skirt: skin or tights
    shoe_color: Color
    backpack: Color | None
    bag: Color | None
    bag_side: int
    hat: str | None
    hat_color: Color
    carried: str | None
    carried_color: Color
    carried_side: int


def _pick(rng: np.random.Generator, palette: tuple[tuple[float, Color], ...]) -> Color:
    weights = np.array([w for w, _ in palette], dtype=np.float64)
    index = int(rng.choice(len(palette), p=weights / weights.sum()))
    return palette[index][1]


def jitter_color(rng: np.random.Generator, color: Color, amount: float = 1.0) -> Color:
    """Perturb a colour's brightness and channels slightly (same name, different garment)."""
    rgb = np.asarray(color, dtype=np.float64)
    rgb = rgb * np.exp(rng.normal(0.0, 0.10 * amount)) + rng.normal(0.0, 7.0 * amount, 3)
    return tuple(int(v) for v in np.clip(np.rint(rgb), 0, 255))  # type: ignore[return-value]


def _choice(rng: np.random.Generator, options: tuple[str, ...], weights: tuple[float, ...]) -> str:
    p = np.asarray(weights, dtype=np.float64)
    return options[int(rng.choice(len(options), p=p / p.sum()))]


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draw one person's persistent attributes."""
    skin = jitter_color(rng, _pick(rng, SKIN_TONES), 0.5)
    hair_style = _choice(rng, HAIR_STYLES, (0.05, 0.45, 0.2, 0.2, 0.1))
    upper = jitter_color(rng, _pick(rng, UPPER_PALETTE))
    pattern = _choice(rng, PATTERNS, (0.6, 0.15, 0.1, 0.15))
    pattern_color = jitter_color(rng, _pick(rng, UPPER_PALETTE))
    if pattern == "logo":
        pattern_color = jitter_color(rng, _pick(rng, LOGO_PALETTE))
    lower_kind = _choice(rng, LOWER_KINDS, (0.72, 0.16, 0.12))
    lower = jitter_color(rng, _pick(rng, LOWER_PALETTE))
    if lower_kind == "skirt" and rng.random() < 0.5:
        legwear = jitter_color(rng, (30, 28, 30), 0.5)  # dark tights
    else:
        legwear = skin
    has_backpack = rng.random() < 0.3
    has_bag = rng.random() < 0.25
    hat = _choice(rng, HATS, (0.6, 0.4)) if rng.random() < 0.12 else None
    carried = _choice(rng, CARRIED, (0.5, 0.3, 0.2)) if rng.random() < 0.18 else None
    return Identity(
        height=float(rng.uniform(0.86, 1.0)),
        build=float(rng.uniform(0.85, 1.2)),
        head=float(rng.uniform(0.9, 1.1)),
        torso=float(rng.uniform(0.93, 1.07)),
        skin=skin,
        hair_color=jitter_color(rng, _pick(rng, HAIR_COLORS), 0.6),
        hair_style=hair_style,
        upper_color=upper,
        upper_pattern=pattern,
        pattern_color=pattern_color,
        logo_shape=_choice(rng, LOGO_SHAPES, (1, 1, 1, 1)),
        long_sleeves=bool(rng.random() < 0.7),
        open_jacket=bool(rng.random() < 0.2),
        inner_color=jitter_color(rng, _pick(rng, UPPER_PALETTE)),
        lower_kind=lower_kind,
        lower_color=lower,
        legwear=legwear,
        shoe_color=jitter_color(rng, _pick(rng, SHOE_PALETTE), 0.6),
        backpack=jitter_color(rng, _pick(rng, BAG_PALETTE)) if has_backpack else None,
        bag=jitter_color(rng, _pick(rng, BAG_PALETTE)) if has_bag else None,
        bag_side=1 if rng.random() < 0.5 else -1,
        hat=hat,
        hat_color=jitter_color(rng, _pick(rng, BAG_PALETTE)),
        carried=carried,
        carried_color=jitter_color(rng, _pick(rng, BAG_PALETTE)),
        carried_side=1 if rng.random() < 0.5 else -1,
    )


# Stream tags that keep the random streams of different purposes independent.
STREAM_IDENTITY = 1
STREAM_OTHER_PERSON = 2


@lru_cache(maxsize=4096)
def identity_for(seed: int, pid: int) -> Identity:
    """The identity with label ``pid`` in the dataset generated from ``seed``."""
    return sample_identity(np.random.default_rng([seed, STREAM_IDENTITY, pid]))
