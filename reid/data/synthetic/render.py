"""Drawing one walking pedestrian with OpenCV primitives, directly at the target size.

Coordinates are float pixels; primitives are drawn anti-aliased with sub-pixel
precision (``shift`` bits), so people look smooth even in a 64x32 crop.

Views: ``front`` (facing the camera), ``back``, ``left`` / ``right`` (walking
towards the image's left / right edge). What is visible depends on the view:
the logo and an open jacket's inner shirt only from the front, the backpack
mostly from behind, a shoulder bag on the image side that matches the person's
body side (it flips between front and back views).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from reid.data.synthetic.identity import Color, Identity

VIEWS = ("front", "back", "left", "right")

_SHIFT = 4
_ONE = 1 << _SHIFT
_AA = cv2.LINE_AA
BODY_WIDTH = 1.3  # widths relative to the base proportions (detector crops are tight)

Point = tuple[float, float]


def _p(pt: Point) -> tuple[int, int]:
    return (round(pt[0] * _ONE), round(pt[1] * _ONE))


def shade(color: Color, factor: float) -> Color:
    """Scale a colour's brightness (``factor < 1`` darkens)."""
    return tuple(min(255, max(0, round(c * factor))) for c in color)  # type: ignore[return-value]


def disc(img: np.ndarray, c: Point, r: float, color: Color) -> None:
    """Filled anti-aliased circle."""
    cv2.circle(img, _p(c), max(1, round(r * _ONE)), color, -1, _AA, _SHIFT)


def ellipse(
    img: np.ndarray,
    c: Point,
    axes: Point,
    color: Color,
    angle: float = 0.0,
    start: float = 0.0,
    end: float = 360.0,
) -> None:
    """Filled anti-aliased ellipse (or elliptic sector from ``start`` to ``end`` degrees)."""
    ax = (max(1, round(axes[0] * _ONE)), max(1, round(axes[1] * _ONE)))
    cv2.ellipse(img, _p(c), ax, angle, start, end, color, -1, _AA, _SHIFT)


def poly(img: np.ndarray, pts: Sequence[Point], color: Color) -> None:
    """Filled anti-aliased polygon."""
    arr = np.rint(np.asarray(pts, dtype=np.float64) * _ONE).astype(np.int32)
    cv2.fillPoly(img, [arr], color, _AA, _SHIFT)


def line(img: np.ndarray, a: Point, b: Point, width: float, color: Color) -> None:
    """Anti-aliased straight line of (integer-rounded) ``width`` pixels."""
    cv2.line(img, _p(a), _p(b), color, max(1, round(width)), _AA, _SHIFT)


def limb(img: np.ndarray, a: Point, b: Point, ra: float, rb: float, color: Color) -> None:
    """A tapered capsule from ``a`` (radius ``ra``) to ``b`` (radius ``rb``)."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    n = math.hypot(dx, dy)
    if n > 1e-6:
        px, py = -dy / n, dx / n
        poly(
            img,
            [
                (a[0] + ra * px, a[1] + ra * py),
                (b[0] + rb * px, b[1] + rb * py),
                (b[0] - rb * px, b[1] - rb * py),
                (a[0] - ra * px, a[1] - ra * py),
            ],
            color,
        )
    disc(img, a, ra, color)
    disc(img, b, rb, color)


def _fill_garment(
    img: np.ndarray,
    pts: Sequence[Point],
    ident: Identity,
    period: float,
    axis_x: float,
    half_width: float,
    show_pattern: bool = True,
) -> None:
    """Fill a polygon with the upper garment: base colour, pattern and cylinder shading."""
    h, w = img.shape[:2]
    arr = np.asarray(pts, dtype=np.float64)
    x0 = max(0, math.floor(arr[:, 0].min()) - 1)
    y0 = max(0, math.floor(arr[:, 1].min()) - 1)
    x1 = min(w, math.ceil(arr[:, 0].max()) + 2)
    y1 = min(h, math.ceil(arr[:, 1].max()) + 2)
    if x1 <= x0 or y1 <= y0:
        return
    ph, pw = y1 - y0, x1 - x0
    layer = np.empty((ph, pw, 3), np.uint8)
    layer[:] = ident.upper_color
    pattern = ident.upper_pattern if show_pattern else "solid"
    pc = ident.pattern_color
    if pattern in ("stripes", "checks") and period >= 2.0:
        thick = max(1.0, period * (0.4 if pattern == "stripes" else 0.22))
        y = (ident.torso * 7.0) % period  # identity-specific phase of the stripes
        while y < ph:
            line(layer, (-2, y), (pw + 2, y), thick, pc)
            y += period
        if pattern == "checks":
            x = (axis_x - x0) % period
            while x < pw:
                line(layer, (x, -2), (x, ph + 2), thick, pc)
                x += period
    mask = np.zeros((ph, pw), np.uint8)
    poly(mask, [(x - x0, y - y0) for x, y in pts], 255)
    xs = (np.arange(pw, dtype=np.float32) + x0 + 0.5 - axis_x) / max(half_width, 1.0)
    light = 1.0 - 0.28 * np.clip(xs, -1.2, 1.2) ** 2
    alpha = mask.astype(np.float32)[:, :, None] * (light[None, :, None] / 255.0)
    region = img[y0:y1, x0:x1].astype(np.float32)
    keep = (mask.astype(np.float32) / 255.0)[:, :, None]
    out = region * (1.0 - keep) + layer.astype(np.float32) * alpha
    img[y0:y1, x0:x1] = np.clip(out + 0.5, 0, 255).astype(np.uint8)


class _Body:
    """Joint positions of one person in one pose, in image pixels."""

    def __init__(
        self, ident: Identity, view: str, phase: float, cx: float, foot_y: float, height: float
    ) -> None:
        P = height
        b = ident.build * BODY_WIDTH
        self.P, self.b, self.cx = P, b, cx
        self.side = view in ("left", "right")
        self.d = 1.0 if view == "right" else -1.0 if view == "left" else 0.0
        self.hh = 0.125 * P * ident.head
        self.ankle_y = foot_y - 0.03 * P
        self.foot_y = foot_y
        s = math.sin(phase)
        top = foot_y - P
        ys = top + self.hh + 0.035 * P
        yh = ys + 0.30 * P * ident.torso
        if self.side:
            d = self.d
            leg = self.ankle_y - yh
            legs = []
            for leg_phase in (phase, phase + math.pi):  # near leg, far leg
                t = 0.38 * math.sin(leg_phase)
                bend = 0.8 * max(0.0, math.cos(leg_phase + 0.6)) ** 1.5
                hip = (cx, yh - 0.01 * P)
                knee = (hip[0] + 0.5 * leg * d * math.sin(t), hip[1] + 0.5 * leg * math.cos(t))
                st = t - bend
                ankle = (knee[0] + 0.5 * leg * d * math.sin(st), knee[1] + 0.5 * leg * math.cos(st))
                legs.append([hip, knee, ankle, st])
            dy = self.ankle_y - max(legs[0][2][1], legs[1][2][1])  # body bobs while walking
            for lg in legs:
                for i in range(3):
                    lg[i] = (lg[i][0], lg[i][1] + dy)
            top, ys, yh = top + dy, ys + dy, yh + dy
            self.legs = legs
            arms = []
            for a in (-0.45 * s, 0.45 * s):  # near arm, far arm (opposite to the legs)
                sh = (cx - d * 0.005 * P, ys + 0.03 * P)
                el = (sh[0] + 0.15 * P * d * math.sin(a), sh[1] + 0.15 * P * math.cos(a))
                fa = a + 0.25 + 0.35 * max(0.0, a)
                hand = (el[0] + 0.14 * P * d * math.sin(fa), el[1] + 0.14 * P * math.cos(fa))
                arms.append((sh, el, hand))
            self.arms = arms
        else:
            hx = 0.045 * P * b
            legs = []
            for sign, fwd in ((-1.0, s), (1.0, -s)):  # image-left leg, image-right leg
                hip = (cx + sign * hx, yh - 0.01 * P)
                ankle = (
                    cx + sign * (0.04 * P * b) + 0.01 * P * fwd,
                    self.ankle_y + 0.012 * P * fwd - 0.035 * P * max(0.0, -fwd),
                )
                knee = (0.5 * (hip[0] + ankle[0]) - sign * 0.003 * P, 0.5 * (hip[1] + ankle[1]))
                legs.append([hip, knee, ankle, 0.0])
            self.legs = legs
            sw = 0.115 * P * b
            arms = []
            for sign, fwd in ((-1.0, -s), (1.0, s)):
                sh = (cx + sign * (sw - 0.022 * P), ys + 0.025 * P)
                up = max(0.0, fwd)
                el = (cx + sign * (sw + 0.012 * P), ys + 0.16 * P - 0.03 * P * up)
                hand = (
                    cx + sign * (sw + 0.012 * P - 0.02 * P * up),
                    yh + 0.035 * P - 0.07 * P * up + 0.01 * P * max(0.0, -fwd),
                )
                arms.append((sh, el, hand))
            self.arms = arms
        self.top, self.ys, self.yh = top, ys, yh
        head_dx = self.d * 0.01 * P
        self.head_c = (cx + head_dx, top + 0.5 * self.hh)


def _draw_leg(img: np.ndarray, ident: Identity, leg: list, body: _Body, far: bool) -> None:
    P, b = body.P, body.b
    f = 0.78 if far else 1.0
    hip, knee, ankle, st = leg
    r_hip, r_knee, r_ankle = 0.046 * P * b, 0.034 * P * b, 0.025 * P * b
    kind = ident.lower_kind
    legwear = shade(ident.legwear, f)
    lower = shade(ident.lower_color, f)
    if kind == "trousers":
        limb(img, hip, knee, r_hip, r_knee, lower)
        limb(img, knee, ankle, r_knee, r_ankle * 1.05, lower)
    else:
        limb(img, hip, knee, r_hip * 0.85, r_knee * 0.85, legwear)
        limb(img, knee, ankle, r_knee * 0.85, r_ankle * 0.8, legwear)
        if kind == "shorts":
            mid = (hip[0] + 0.6 * (knee[0] - hip[0]), hip[1] + 0.6 * (knee[1] - hip[1]))
            limb(img, hip, mid, r_hip * 1.05, r_knee * 1.15, lower)
    shoe = shade(ident.shoe_color, f)
    if body.side:
        c = (ankle[0] + body.d * 0.022 * P, ankle[1] + 0.014 * P)
        ang = -math.degrees(st) * body.d * 0.5
        ellipse(img, c, (0.042 * P, 0.017 * P), shoe, angle=ang)
    else:
        ellipse(img, (ankle[0], ankle[1] + 0.013 * P), (0.03 * P * b, 0.018 * P), shoe)


def _draw_arm(img: np.ndarray, ident: Identity, arm: tuple, body: _Body, far: bool) -> None:
    P, b = body.P, body.b
    f = 0.78 if far else 1.0
    sh, el, hand = arm
    sleeve = shade(ident.upper_color, f * 0.93)
    skin = shade(ident.skin, f)
    r_up, r_el, r_wr = 0.03 * P * b, 0.025 * P * b, 0.02 * P * b
    if ident.long_sleeves:
        limb(img, sh, el, r_up, r_el, sleeve)
        limb(img, el, hand, r_el, r_wr, sleeve)
    else:
        limb(img, el, hand, r_el * 0.85, r_wr * 0.85, skin)
        mid = (sh[0] + 0.55 * (el[0] - sh[0]), sh[1] + 0.55 * (el[1] - sh[1]))
        limb(img, mid, el, r_up * 0.85, r_el * 0.85, skin)
        limb(img, sh, mid, r_up * 1.05, r_up, sleeve)
    disc(img, hand, 0.022 * P, skin)


def _hip_block(img: np.ndarray, ident: Identity, body: _Body) -> None:
    P, b, cx, yh = body.P, body.b, body.cx, body.yh
    if ident.lower_kind == "skirt":
        knee_y = body.legs[0][1][1]
        hw = 0.09 * P * b
        spread = 1.45 if not body.side else 1.25
        w = hw if not body.side else 0.07 * P * b
        poly(
            img,
            [
                (cx - w, yh - 0.05 * P),
                (cx + w, yh - 0.05 * P),
                (cx + w * spread, knee_y - 0.01 * P),
                (cx - w * spread, knee_y - 0.01 * P),
            ],
            ident.lower_color,
        )
        return
    if body.side:
        poly(
            img,
            [
                (cx - 0.065 * P * b, yh - 0.05 * P),
                (cx + 0.065 * P * b, yh - 0.05 * P),
                (cx + 0.055 * P * b, yh + 0.05 * P),
                (cx - 0.06 * P * b, yh + 0.05 * P),
            ],
            ident.lower_color,
        )
        return
    hw = 0.09 * P * b
    poly(
        img,
        [
            (cx - hw, yh - 0.05 * P),
            (cx + hw, yh - 0.05 * P),
            (cx + hw * 0.97, yh + 0.05 * P),
            (cx, yh + 0.075 * P),
            (cx - hw * 0.97, yh + 0.05 * P),
        ],
        ident.lower_color,
    )


def _torso_points(body: _Body) -> list[Point]:
    P, b, cx, ys, yh = body.P, body.b, body.cx, body.ys, body.yh
    if body.side:
        d = body.d
        return [
            (cx - d * 0.05 * P * b, ys - 0.012 * P),
            (cx + d * 0.045 * P * b, ys - 0.012 * P),
            (cx + d * 0.072 * P * b, ys + 0.09 * P),
            (cx + d * 0.062 * P * b, yh - 0.04 * P),
            (cx + d * 0.068 * P * b, yh + 0.015 * P),
            (cx - d * 0.07 * P * b, yh + 0.015 * P),
            (cx - d * 0.062 * P * b, yh - 0.06 * P),
            (cx - d * 0.072 * P * b, ys + 0.05 * P),
        ]
    sw, ww, hw = 0.115 * P * b, 0.085 * P * b, 0.092 * P * b
    left = [
        (cx - sw * 0.45, ys - 0.014 * P),
        (cx - sw * 0.92, ys + 0.0),
        (cx - sw, ys + 0.03 * P),
        (cx - sw * 0.95, ys + 0.11 * P),
        (cx - ww, yh - 0.07 * P),
        (cx - hw, yh + 0.015 * P),
    ]
    right = [(2 * cx - x, y) for x, y in reversed(left)]
    return left + right


def _draw_torso(img: np.ndarray, ident: Identity, body: _Body, view: str) -> None:
    P, b, cx, ys, yh = body.P, body.b, body.cx, body.ys, body.yh
    pts = _torso_points(body)
    half = (0.07 if body.side else 0.11) * P * b
    _fill_garment(img, pts, ident, 0.065 * P, cx, half)
    if view != "front":
        return
    if ident.open_jacket:
        poly(
            img,
            [
                (cx - 0.04 * P * b, ys - 0.012 * P),
                (cx + 0.04 * P * b, ys - 0.012 * P),
                (cx + 0.028 * P * b, yh + 0.01 * P),
                (cx - 0.028 * P * b, yh + 0.01 * P),
            ],
            ident.inner_color,
        )
    if ident.upper_pattern == "logo":
        c = (cx + (0.025 * P if ident.open_jacket else 0.0), ys + 0.09 * P)
        r = 0.032 * P
        col = ident.pattern_color
        if ident.logo_shape == "circle":
            disc(img, c, r, col)
        elif ident.logo_shape == "square":
            poly(
                img,
                [
                    (c[0] - r, c[1] - r),
                    (c[0] + r, c[1] - r),
                    (c[0] + r, c[1] + r),
                    (c[0] - r, c[1] + r),
                ],
                col,
            )
        elif ident.logo_shape == "bar":
            poly(
                img,
                [
                    (c[0] - 1.6 * r, c[1] - 0.5 * r),
                    (c[0] + 1.6 * r, c[1] - 0.5 * r),
                    (c[0] + 1.6 * r, c[1] + 0.5 * r),
                    (c[0] - 1.6 * r, c[1] + 0.5 * r),
                ],
                col,
            )
        else:
            poly(img, [(c[0], c[1] - r), (c[0] + r, c[1] + r), (c[0] - r, c[1] + r)], col)


def _draw_head(img: np.ndarray, ident: Identity, body: _Body, view: str) -> None:
    P, hh = body.P, body.hh
    hx, hy = body.head_c
    skin, hair = ident.skin, ident.hair_color
    style = ident.hair_style
    d = body.d
    limb(img, (body.cx, hy + 0.3 * hh), (body.cx, body.ys + 0.005 * P), 0.022 * P, 0.026 * P, skin)
    ax, ay = 0.40 * hh, 0.5 * hh
    if view == "front":
        if style in ("medium", "long"):
            ellipse(img, (hx, hy - 0.02 * hh), (ax * 1.12, ay * 1.04), hair)
        ellipse(img, (hx, hy + 0.03 * hh), (ax * 0.92, ay * 0.95), skin)
        if style != "bald":
            ellipse(img, (hx, hy - 0.06 * hh), (ax * 1.02, ay * 0.98), hair, start=180, end=360)
    elif view == "back":
        ellipse(img, (hx, hy), (ax, ay), skin)
        if style == "short":
            ellipse(img, (hx, hy - 0.08 * hh), (ax * 1.03, ay * 0.92), hair)
        elif style == "ponytail":
            ellipse(img, (hx, hy - 0.06 * hh), (ax * 1.03, ay * 0.95), hair)
            limb(img, (hx, hy + 0.2 * hh), (hx, hy + 0.85 * hh), 0.12 * hh, 0.07 * hh, hair)
        elif style != "bald":
            ellipse(img, (hx, hy - 0.03 * hh), (ax * 1.08, ay * 1.0), hair)
    else:
        ellipse(img, (hx, hy), (ax * 1.02, ay), skin)
        disc(img, (hx + d * ax * 0.95, hy + 0.05 * hh), 0.1 * hh, skin)  # nose
        if style != "bald":
            back = (hx - d * 0.12 * hh, hy - 0.06 * hh)
            ellipse(img, back, (ax * 0.85, ay * 0.92), hair)
            ellipse(img, (hx, hy - 0.08 * hh), (ax * 1.02, ay * 0.9), hair, start=180, end=360)
        if style == "ponytail":
            limb(
                img,
                (hx - d * 0.35 * hh, hy),
                (hx - d * 0.5 * hh, hy + 0.8 * hh),
                0.12 * hh,
                0.07 * hh,
                hair,
            )
    if style == "long" and view != "front":
        top = hy - 0.1 * hh
        w = ax * (1.05 if view == "back" else 0.7)
        cxh = hx if view == "back" else hx - d * 0.2 * hh
        poly(
            img,
            [
                (cxh - w, top),
                (cxh + w, top),
                (cxh + w * 1.05, body.ys + 0.08 * P),
                (cxh - w * 1.05, body.ys + 0.08 * P),
            ],
            hair,
        )
    if ident.hat is not None:
        col = ident.hat_color
        if ident.hat == "beanie":
            ellipse(img, (hx, hy - 0.05 * hh), (ax * 1.1, ay * 1.05), col, start=180, end=360)
        else:
            ellipse(img, (hx, hy - 0.08 * hh), (ax * 1.06, ay * 0.95), col, start=180, end=360)
            if view == "front":
                ellipse(img, (hx, hy - 0.1 * hh), (ax * 1.1, 0.09 * hh), shade(col, 0.8))
            elif view != "back":
                limb(
                    img,
                    (hx, hy - 0.1 * hh),
                    (hx + d * 0.75 * hh, hy - 0.08 * hh),
                    0.06 * hh,
                    0.05 * hh,
                    shade(col, 0.8),
                )


def _image_side(view: str, body_side: int) -> float:
    """Image x direction of a body side (+1 left, -1 right) in a front or back view."""
    return float(body_side) if view == "front" else -float(body_side)


def _rect(img: np.ndarray, c: Point, hw: float, hh: float, color: Color) -> None:
    x, y = c
    poly(img, [(x - hw, y - hh), (x + hw, y - hh), (x + hw, y + hh), (x - hw, y + hh)], color)


def _draw_carried(
    img: np.ndarray, ident: Identity, hand: Point, person_height: float, far: bool
) -> None:
    P = person_height
    col = shade(ident.carried_color, 0.78 if far else 1.0)
    x, y = hand
    if ident.carried == "handbag":
        line(img, (x - 0.015 * P, y + 0.03 * P), (x, y), max(1.0, 0.008 * P), col)
        line(img, (x + 0.015 * P, y + 0.03 * P), (x, y), max(1.0, 0.008 * P), col)
        _rect(img, (x, y + 0.06 * P), 0.035 * P, 0.03 * P, col)
    elif ident.carried == "shopping_bag":
        paper = shade((205, 185, 150), 0.78 if far else 1.0)
        bag = paper if ident.carried_color[0] < 60 else col
        _rect(img, (x, y + 0.065 * P), 0.04 * P, 0.05 * P, bag)
    elif ident.carried == "umbrella":
        limb(img, (x, y), (x + 0.03 * P, y + 0.3 * P), 0.012 * P, 0.02 * P, col)


def _draw_bag(img: np.ndarray, ident: Identity, body: _Body, x_side: float) -> None:
    assert ident.bag is not None
    P, b, cx, ys, yh = body.P, body.b, body.cx, body.ys, body.yh
    strap = shade(ident.bag, 0.8)
    if body.side:
        bx = cx + x_side * 0.02 * P
        line(img, (cx, ys - 0.005 * P), (bx, yh - 0.05 * P), max(1.0, 0.012 * P), strap)
    else:
        bx = cx + x_side * (0.115 * P * b + 0.02 * P)
        line(
            img,
            (cx + x_side * 0.06 * P * b, ys - 0.008 * P),
            (bx, yh - 0.05 * P),
            max(1.0, 0.012 * P),
            strap,
        )
    _rect(img, (bx, yh + 0.005 * P), 0.045 * P, 0.045 * P, ident.bag)


def draw_person(
    img: np.ndarray,
    ident: Identity,
    view: str,
    phase: float,
    cx: float,
    foot_y: float,
    height: float,
) -> None:
    """Draw ``ident`` walking in ``view`` with gait ``phase`` (radians) onto an RGB image.

    ``cx`` is the body's centre line, ``foot_y`` the ground line under the shoes and
    ``height`` the person's height in pixels; everything is drawn in place.
    """
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; expected one of {', '.join(VIEWS)}")
    body = _Body(ident, view, phase, cx, foot_y, height)
    P = body.P
    if body.side:
        d = body.d
        near_side = -int(d)  # walking right shows the right (-1) body side
        far_arm, near_arm = body.arms[1], body.arms[0]
        if ident.bag is not None and ident.bag_side != near_side:
            _draw_bag(img, ident, body, -d)
        _draw_arm(img, ident, far_arm, body, far=True)
        if ident.carried and ident.carried_side != near_side:
            _draw_carried(img, ident, far_arm[2], P, far=True)
        _draw_leg(img, ident, body.legs[1], body, far=True)
        _draw_leg(img, ident, body.legs[0], body, far=False)
        _hip_block(img, ident, body)
        _draw_torso(img, ident, body, view)
        if ident.backpack is not None:
            bx = body.cx - d * (0.07 * P * body.b + 0.035 * P)
            _rect(img, (bx, body.ys + 0.11 * P), 0.04 * P, 0.1 * P, ident.backpack)
        _draw_head(img, ident, body, view)
        _draw_arm(img, ident, near_arm, body, far=False)
        if ident.carried and ident.carried_side == near_side:
            _draw_carried(img, ident, near_arm[2], P, far=False)
        if ident.bag is not None and ident.bag_side == near_side:
            _draw_bag(img, ident, body, d * 0.3)
        return
    if ident.hair_style == "long" and view == "front":
        hx, hy = body.head_c
        _rect(
            img,
            (hx, 0.5 * (hy + body.ys + 0.07 * P)),
            0.45 * body.hh,
            0.5 * (body.ys + 0.07 * P - hy),
            ident.hair_color,
        )
    for leg in body.legs:
        _draw_leg(img, ident, leg, body, far=False)
    _hip_block(img, ident, body)
    _draw_torso(img, ident, body, view)
    for arm in body.arms:
        _draw_arm(img, ident, arm, body, far=False)
    if ident.carried:
        x_side = _image_side(view, ident.carried_side)
        arm = body.arms[1] if x_side > 0 else body.arms[0]
        _draw_carried(img, ident, arm[2], P, far=False)
    if ident.backpack is not None:
        cx, ys = body.cx, body.ys
        sw = 0.115 * P * body.b
        if view == "back":
            _rect(img, (cx, ys + 0.12 * P), 0.78 * sw, 0.105 * P, ident.backpack)
            _rect(img, (cx, ys + 0.05 * P), 0.7 * sw, 0.03 * P, shade(ident.backpack, 0.8))
        else:
            strap = shade(ident.backpack, 0.85)
            width = max(1.0, 0.018 * P)
            line(img, (cx - 0.55 * sw, ys - 0.01 * P), (cx - 0.6 * sw, ys + 0.16 * P), width, strap)
            line(img, (cx + 0.55 * sw, ys - 0.01 * P), (cx + 0.6 * sw, ys + 0.16 * P), width, strap)
    if ident.bag is not None:
        _draw_bag(img, ident, body, _image_side(view, ident.bag_side))
    _draw_head(img, ident, body, view)
