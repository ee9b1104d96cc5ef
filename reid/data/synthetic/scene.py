"""Composing one detector crop: background, bystanders, the person, occluders, camera.

Every function takes its own ``numpy.random.Generator`` so an image depends only on
the seed material it is given, never on which worker renders it or in which order.
"""

from __future__ import annotations

import math

import numpy as np

from reid.data.synthetic.camera import CameraProfile, apply_camera, background_crop
from reid.data.synthetic.difficulty import strength
from reid.data.synthetic.identity import Identity, sample_identity
from reid.data.synthetic.render import VIEWS, draw_person, limb, poly, shade

_OCCLUDER_COLORS = ((120, 122, 125), (40, 60, 45), (30, 30, 32), (170, 170, 165), (150, 40, 35))
_CAR_COLORS = ((30, 30, 34), (200, 200, 200), (140, 140, 145), (150, 30, 30), (40, 60, 120))


def sample_view(rng: np.random.Generator, prof: CameraProfile) -> str:
    """A viewpoint drawn from the camera's typical walking directions."""
    return VIEWS[int(rng.choice(4, p=np.asarray(prof.view_probs)))]


def _bystander(img: np.ndarray, rng: np.random.Generator, behind: bool) -> None:
    """Another pedestrian partly inside the crop: behind the target, or in front of it."""
    h, w = img.shape[:2]
    other = sample_identity(rng)
    side = 1.0 if rng.random() < 0.5 else -1.0
    if behind:
        height = h * rng.uniform(0.6, 0.9)
        foot = h * rng.uniform(0.8, 0.97)
        cx = w / 2 + side * w * rng.uniform(0.35, 0.7)
    else:
        height = h * rng.uniform(0.95, 1.2)
        foot = h * rng.uniform(1.0, 1.15)
        cx = w / 2 + side * w * rng.uniform(0.45, 0.7)
    view = VIEWS[int(rng.integers(4))]
    draw_person(img, other, view, rng.uniform(0, 2 * math.pi), cx, foot, height * other.height)


def _occluder(img: np.ndarray, rng: np.random.Generator) -> None:
    """Something between the camera and the person: pole, bench/railing, car, bystander."""
    h, w = img.shape[:2]
    kind = rng.random()
    if kind < 0.3:  # pole or sign post
        x = rng.uniform(0.05, 0.95) * w
        half = rng.uniform(0.03, 0.07) * w
        col = _OCCLUDER_COLORS[int(rng.integers(len(_OCCLUDER_COLORS)))]
        poly(img, [(x - half, -1), (x + half, -1), (x + half, h + 1), (x - half, h + 1)], col)
        hl = shade(col, 1.35)
        x2 = x - half * 0.4
        poly(img, [(x2 - 0.2 * half, -1), (x2, -1), (x2, h + 1), (x2 - 0.2 * half, h + 1)], hl)
    elif kind < 0.55:  # bench, railing or bin in the lower part
        top = h * rng.uniform(0.6, 0.82)
        x0, x1 = sorted(rng.uniform(-0.3, 1.3, 2) * w)
        x1 = max(x1, x0 + 0.5 * w)
        col = _OCCLUDER_COLORS[int(rng.integers(len(_OCCLUDER_COLORS)))]
        if rng.random() < 0.5:  # railing: bars and posts
            for y in (top, top + 0.12 * h):
                poly(img, [(x0, y), (x1, y), (x1, y + 0.025 * h), (x0, y + 0.025 * h)], col)
            x = x0
            while x < x1:
                poly(img, [(x, top), (x + 0.04 * w, top), (x + 0.04 * w, h), (x, h)], col)
                x += w * 0.35
        else:
            poly(img, [(x0, top), (x1, top), (x1, h + 1), (x0, h + 1)], col)
            poly(
                img,
                [(x0, top), (x1, top), (x1, top + 0.03 * h), (x0, top + 0.03 * h)],
                shade(col, 1.3),
            )
    elif kind < 0.7:  # car passing or parked in front
        top = h * rng.uniform(0.5, 0.75)
        col = _CAR_COLORS[int(rng.integers(len(_CAR_COLORS)))]
        x0 = w * rng.uniform(-0.5, 0.3)
        x1 = x0 + w * rng.uniform(0.8, 1.6)
        poly(img, [(x0, top), (x1, top), (x1, h + 1), (x0, h + 1)], col)
        poly(
            img,
            [(x0, top), (x1, top), (x1, top + 0.04 * h), (x0, top + 0.04 * h)],
            shade(col, 1.25),
        )
        limb(
            img,
            (x0 + 0.2 * w, h * 0.98),
            (x0 + 0.2 * w, h * 0.98),
            0.12 * w,
            0.12 * w,
            (20, 20, 20),
        )
    else:
        _bystander(img, rng, behind=False)


def render_scene(
    ident: Identity,
    prof: CameraProfile,
    view: str,
    rng: np.random.Generator,
    size: tuple[int, int],
    difficulty: float,
    seed: int,
    base_scale: float = 0.93,
    mode: str = "person",
) -> tuple[np.ndarray, int]:
    """Render one crop of ``ident`` seen by camera ``prof``; returns (RGB uint8, JPEG quality).

    ``mode`` is ``"person"`` (a detection of the person), ``"partial"`` (a poor
    detection: zoomed in or half outside the box, used for distractors) or ``"junk"``
    (a box that is mostly background).
    """
    h, w = size
    st = strength(difficulty)
    s, clutter = st.geometry, st.clutter
    img = background_crop(seed, prof.index, h, w, rng)
    if rng.random() < 0.05 + 0.25 * clutter:
        _bystander(img, rng, behind=True)
    phase = rng.uniform(0.0, 2.0 * math.pi)
    height = h * base_scale * ident.height * math.exp(rng.normal(0.0, 0.02 + 0.05 * s))
    cx = w / 2 + rng.normal(0.0, 0.015 + 0.06 * s) * w
    foot = h * (0.985 + rng.normal(0.0, 0.005 + 0.025 * s))
    if mode == "person" and rng.random() < 0.22 * s:  # detector cut part of the person off
        cut = rng.random()
        if cut < 0.4:
            foot += height * rng.uniform(0.08, 0.25)
        elif cut < 0.7:
            foot -= height * rng.uniform(0.05, 0.15)
            height *= 1.1
        else:
            cx += (1.0 if rng.random() < 0.5 else -1.0) * w * rng.uniform(0.2, 0.35)
    elif mode == "partial":
        if rng.random() < 0.5:  # zoomed in on the upper body
            height = h * rng.uniform(1.4, 2.0)
            foot = h * rng.uniform(1.3, 1.9)
        else:  # half outside the box
            cx = w / 2 + (1.0 if rng.random() < 0.5 else -1.0) * w * rng.uniform(0.35, 0.5)
    elif mode == "junk":
        r = rng.random()
        if r < 0.4:  # only a sliver of a person at the border
            cx = w / 2 + (1.0 if rng.random() < 0.5 else -1.0) * w * rng.uniform(0.55, 0.75)
        elif r < 0.7:  # legs only (box far too low and too big)
            height = h * rng.uniform(2.2, 3.2)
            foot = h * rng.uniform(0.95, 1.05)
        else:  # nothing but background
            height = 0.0
    if height > 0:
        draw_person(img, ident, view, phase, cx, foot, height)
    if mode != "junk" and rng.random() < 0.05 + 0.3 * clutter:
        _occluder(img, rng)
    return apply_camera(img, prof, rng, difficulty)
