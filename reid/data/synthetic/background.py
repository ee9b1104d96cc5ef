"""Structured background textures, one family per camera (street, indoor, park, plaza, parking).

Each camera gets one wide texture, rendered once per process; every image of that
camera is a crop of it at a random offset, like detections at different places in
a static camera's field of view.
"""

from __future__ import annotations

import cv2
import numpy as np

from reid.data.synthetic.render import Color, disc, line, poly

FAMILIES = ("street", "indoor", "park", "plaza", "parking")
MAIN_FAMILY_SHARE = 0.5  # the rest of a camera's scene mixes in other families


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Low-frequency noise in roughly [-1, 1] with features about ``cell`` pixels wide."""
    gh, gw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
    grid = rng.normal(0.0, 1.0, (gh, gw)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _jit(rng: np.random.Generator, color: Color, amount: float = 12.0) -> Color:
    c = np.clip(np.asarray(color, np.float64) + rng.normal(0.0, amount, 3), 0, 255)
    return tuple(int(v) for v in c)  # type: ignore[return-value]


def _choose(rng: np.random.Generator, colors: list[Color]) -> Color:
    return colors[int(rng.integers(len(colors)))]


def _rect(img: np.ndarray, x0: float, y0: float, x1: float, y1: float, color: Color) -> None:
    poly(img, [(x0, y0), (x1, y0), (x1, y1), (x0, y1)], color)


def _facade(img: np.ndarray, rng: np.random.Generator, horizon: int, scale: float) -> None:
    w = img.shape[1]
    wall = _jit(
        rng,
        _choose(
            rng, [(150, 82, 62), (200, 186, 160), (150, 150, 146), (214, 212, 206), (120, 110, 100)]
        ),
    )
    img[:horizon] = wall
    win = _jit(rng, _choose(rng, [(42, 50, 62), (70, 82, 96), (30, 32, 36)]), 6)
    frame = _jit(rng, (225, 225, 220), 10)
    pw, ph = scale * rng.uniform(0.5, 0.8), scale * rng.uniform(0.45, 0.7)
    ww, wh = pw * rng.uniform(0.45, 0.65), ph * rng.uniform(0.45, 0.65)
    y = horizon - ph * rng.uniform(0.9, 1.3)
    x0 = rng.uniform(0, pw)
    while y + wh > -ph:
        x = x0
        while x < w:
            _rect(img, x - 1, y - 1, x + ww + 1, y + wh + 1, frame)
            _rect(img, x, y, x + ww, y + wh, win)
            x += pw
        y -= ph
    # shop fronts / signs near the ground: a few vivid patches, as in real streets
    x = rng.uniform(0, scale)
    while x < w:
        sw = scale * rng.uniform(0.6, 1.6)
        if rng.random() < 0.5:
            sign = _jit(
                rng,
                _choose(
                    rng,
                    [(200, 40, 40), (40, 90, 180), (230, 200, 60), (40, 140, 80), (240, 240, 240)],
                ),
            )
            _rect(img, x, horizon - 0.55 * scale, x + sw, horizon - 0.38 * scale, sign)
        x += sw + scale * rng.uniform(0.2, 0.8)


def _ground_lines(
    img: np.ndarray, rng: np.random.Generator, horizon: int, color: Color, step: float
) -> None:
    h, w = img.shape[:2]
    y = horizon + step * rng.uniform(0.2, 0.6)
    k = 1.0
    while y < h:
        line(img, (0, y), (w, y), 1, color)
        k *= 1.25
        y += step * k * 0.4
    x = rng.uniform(0, step * 2)
    while x < w:
        line(img, (x, horizon), (x + (x - w / 2) * 0.6, h), 1, color)
        x += step * 2.2


def _street(img: np.ndarray, rng: np.random.Generator, horizon: int, scale: float) -> None:
    h, w = img.shape[:2]
    _facade(img, rng, horizon, scale)
    ground = _jit(rng, _choose(rng, [(92, 92, 94), (150, 148, 140), (120, 118, 112)]))
    img[horizon:] = ground
    kerb = _jit(rng, (170, 168, 160), 8)
    _rect(img, 0, horizon, w, horizon + 0.06 * scale, kerb)
    _ground_lines(img, rng, horizon, tuple(int(c * 0.8) for c in ground), 0.35 * scale)  # type: ignore[arg-type]
    if rng.random() < 0.6:  # lane marking
        ly = horizon + (h - horizon) * rng.uniform(0.5, 0.85)
        mark = _choose(rng, [(230, 230, 225), (220, 190, 60)])
        x = rng.uniform(0, scale)
        while x < w:
            _rect(img, x, ly, x + 0.5 * scale, ly + 0.04 * scale, mark)
            x += scale


def _indoor(img: np.ndarray, rng: np.random.Generator, horizon: int, scale: float) -> None:
    h, w = img.shape[:2]
    wall = _jit(
        rng, _choose(rng, [(222, 216, 200), (190, 200, 206), (205, 200, 190), (170, 160, 150)])
    )
    img[:horizon] = wall
    x = rng.uniform(0, scale)
    while x < w:
        kind = rng.random()
        ww = scale * rng.uniform(0.4, 0.9)
        if kind < 0.35:  # door
            door = _jit(rng, _choose(rng, [(110, 76, 50), (150, 150, 150), (80, 90, 110)]))
            _rect(img, x, horizon - 1.4 * scale, x + ww, horizon, door)
            disc(
                img, (x + ww * 0.85, horizon - 0.7 * scale), max(1.0, 0.03 * scale), (200, 190, 120)
            )
        elif kind < 0.65:  # poster / notice board
            post = _jit(
                rng,
                _choose(
                    rng,
                    [(200, 60, 60), (60, 110, 190), (240, 230, 200), (70, 150, 90), (230, 180, 60)],
                ),
                20,
            )
            _rect(img, x, horizon - 1.1 * scale, x + ww * 0.7, horizon - 0.5 * scale, post)
        x += ww + scale * rng.uniform(0.3, 1.0)
    skirting = tuple(int(c * 0.55) for c in wall)
    _rect(img, 0, horizon - 0.05 * scale, w, horizon, skirting)  # type: ignore[arg-type]
    floor = _jit(
        rng, _choose(rng, [(190, 186, 176), (150, 140, 130), (210, 206, 198), (120, 110, 100)])
    )
    img[horizon:] = floor
    _ground_lines(img, rng, horizon, tuple(int(c * 0.75) for c in floor), 0.5 * scale)  # type: ignore[arg-type]
    # glossy floor: a faint reflection of the wall
    depth = min(h - horizon, horizon)
    if depth > 2:
        refl = img[horizon - depth : horizon][::-1].astype(np.float32)
        img[horizon : horizon + depth] = (0.8 * img[horizon : horizon + depth] + 0.2 * refl).astype(
            np.uint8
        )


def _park(img: np.ndarray, rng: np.random.Generator, horizon: int, scale: float) -> None:
    h, w = img.shape[:2]
    sky = _jit(rng, _choose(rng, [(200, 210, 220), (170, 190, 210), (220, 220, 215)]))
    img[:horizon] = sky
    foliage = _jit(rng, _choose(rng, [(40, 70, 40), (60, 90, 45), (30, 55, 35)]))
    for _ in range(int(w / scale * 4)):
        c = (rng.uniform(0, w), rng.uniform(-0.2 * horizon, horizon))
        disc(img, c, scale * rng.uniform(0.2, 0.6), _jit(rng, foliage, 15))
    hedge = _jit(rng, (45, 80, 40), 10)
    _rect(img, 0, horizon - 0.35 * scale, w, horizon, hedge)
    grass = _jit(rng, _choose(rng, [(80, 120, 55), (95, 130, 60), (70, 105, 50)]))
    img[horizon:] = grass
    if rng.random() < 0.7:  # gravel / paved path
        path = _jit(rng, _choose(rng, [(190, 178, 150), (160, 158, 152)]))
        y0 = horizon + (h - horizon) * rng.uniform(0.15, 0.5)
        _rect(img, 0, y0, w, h, path)
    for _ in range(int(w / scale * 2)):  # tree trunks
        x = rng.uniform(0, w)
        _rect(img, x, horizon - 0.9 * scale, x + 0.08 * scale, horizon + 0.05 * scale, (70, 55, 40))


def _plaza(img: np.ndarray, rng: np.random.Generator, horizon: int, scale: float) -> None:
    h, w = img.shape[:2]
    glass = _jit(rng, _choose(rng, [(90, 110, 125), (120, 135, 140), (60, 70, 80)]))
    img[:horizon] = glass
    mull = _jit(rng, (190, 190, 185), 10)
    step = scale * rng.uniform(0.3, 0.5)
    x = rng.uniform(0, step)
    while x < w:
        line(img, (x, 0), (x, horizon), max(1.0, 0.03 * scale), mull)
        x += step
    y = horizon - rng.uniform(0.3, 0.6) * scale
    while y > 0:
        line(img, (0, y), (w, y), max(1.0, 0.02 * scale), mull)
        y -= step * 1.3
    paving = _jit(
        rng, _choose(rng, [(160, 90, 70), (150, 150, 150), (190, 180, 165), (110, 110, 115)])
    )
    img[horizon:] = paving
    joint = tuple(int(c * 0.7) for c in paving)
    bh = 0.12 * scale
    y, row = float(horizon), 0
    while y < h:
        line(img, (0, y), (w, y), 1, joint)  # type: ignore[arg-type]
        bw = 2.2 * bh
        x = (row % 2) * bw / 2
        while x < w:
            line(img, (x, y), (x, y + bh), 1, joint)  # type: ignore[arg-type]
            x += bw
        y += bh
        bh *= 1.08
        row += 1


def _parking(img: np.ndarray, rng: np.random.Generator, horizon: int, scale: float) -> None:
    h, w = img.shape[:2]
    _facade(img, rng, horizon, scale * 0.6)
    x = rng.uniform(-scale, 0)
    while x < w:  # parked cars along the horizon
        car = _jit(
            rng,
            _choose(
                rng,
                [
                    (30, 30, 34),
                    (200, 200, 200),
                    (140, 140, 145),
                    (150, 30, 30),
                    (40, 60, 120),
                    (230, 230, 228),
                ],
            ),
        )
        cw = scale * rng.uniform(1.0, 1.5)
        _rect(img, x, horizon - 0.45 * scale, x + cw, horizon + 0.05 * scale, car)
        _rect(img, x + 0.2 * cw, horizon - 0.7 * scale, x + 0.8 * cw, horizon - 0.44 * scale, car)
        _rect(
            img,
            x + 0.25 * cw,
            horizon - 0.65 * scale,
            x + 0.75 * cw,
            horizon - 0.46 * scale,
            (40, 48, 58),
        )
        x += cw + scale * rng.uniform(0.1, 0.4)
    asphalt = _jit(rng, (85, 85, 88), 8)
    img[horizon + int(0.05 * scale) :] = asphalt
    x = rng.uniform(0, scale)
    while x < w:
        line(
            img,
            (x, horizon + 0.1 * scale),
            (x - 0.4 * scale, h),
            max(1.0, 0.03 * scale),
            (215, 215, 210),
        )
        x += scale * 1.3


_DRAW = {"street": _street, "indoor": _indoor, "park": _park, "plaza": _plaza, "parking": _parking}


def make_background(
    family: str, rng: np.random.Generator, height: int, width: int, horizon: float
) -> np.ndarray:
    """A structured RGB texture of ``family`` with the ground starting at ``horizon`` (0..1).

    ``height`` x ``width`` is the texture size; structure scales with ``height`` so the
    texture looks alike at every crop size. The texture is a row of segments (building
    fronts, walls, lawns...) of the same family but different materials and colours,
    muted towards grey as real backgrounds are less saturated than clothing.
    """
    if family not in _DRAW:
        raise ValueError(f"unknown background family {family!r}; expected one of {FAMILIES}")
    img = np.zeros((height, width, 3), np.uint8)
    scale = height * 0.45
    x = 0
    while x < width:
        seg_w = min(width - x, int(height * rng.uniform(0.8, 2.2)))
        if width - x - seg_w < height * 0.4:
            seg_w = width - x
        seg = np.zeros((height, seg_w, 3), np.uint8)
        seg_horizon = horizon + rng.normal(0.0, 0.03)
        mixed = rng.random() >= MAIN_FAMILY_SHARE
        seg_family = FAMILIES[int(rng.integers(len(FAMILIES)))] if mixed else family
        _DRAW[seg_family](seg, rng, int(seg_horizon * height), scale)
        img[:, x : x + seg_w] = seg
        x += seg_w
    out = img.astype(np.float32)
    grey = out @ np.array([0.299, 0.587, 0.114], np.float32)
    mute = rng.uniform(0.5, 0.7)
    out = out * (1.0 - mute) + grey[:, :, None] * mute
    shadows = 1.0 + 0.12 * _smooth_noise(rng, height, width, scale * 0.8)
    grain = rng.normal(0.0, 4.0, (height, width, 1)).astype(np.float32)
    out = out * shadows[:, :, None] + grain
    out = cv2.GaussianBlur(out, (0, 0), max(0.3, height / 256.0))
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
