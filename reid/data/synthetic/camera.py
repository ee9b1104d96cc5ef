"""Per-camera appearance: background, viewpoints and the imaging pipeline.

A camera's *character* (white balance, exposure, saturation, contrast, gamma,
resolution, noise, blur, JPEG quality, background family, typical viewpoints) is
drawn once from the seed and the camera index. ``difficulty`` (0..3) only scales
how far the imaging parameters stray from neutral: at 0 all cameras image
nearly identically, at 3 the camera shift dominates the colour statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from reid.data.synthetic.background import FAMILIES, make_background
from reid.data.synthetic.difficulty import strength

STREAM_CAMERA = 3
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
TEXTURE_WIDTH = 40  # background texture width in crop widths: many places per camera


@dataclass(frozen=True, slots=True)
class CameraProfile:
    """One camera's fixed imaging character (0-based ``index``)."""

    index: int
    background: str
    horizon: float  # where the ground starts in the background texture, 0..1
    position_m: float  # position along the walkway network, for travel times
    view_probs: tuple[float, float, float, float]  # front, back, left, right
    gain: float  # exposure
    channel_gain: tuple[float, float, float]  # white balance (R, G, B)
    saturation: float
    contrast: float
    gamma: float
    downscale: float  # 1.0 = full resolution; < 1 images are down- then up-sampled
    noise: float  # sensor noise sigma, in 0..255 units
    blur_prob: float  # probability of motion blur per image
    blur_len: float  # motion blur length as a fraction of the image width
    jpeg_quality: tuple[int, int]  # inclusive range

    def describe(self) -> dict[str, object]:
        """A JSON-friendly summary (rounded) for meta.json."""
        return {
            "camera": self.index + 1,
            "background": self.background,
            "views": dict(
                zip(("front", "back", "left", "right"), _r(self.view_probs), strict=True)
            ),
            "gain": round(self.gain, 3),
            "white_balance": _r(self.channel_gain),
            "saturation": round(self.saturation, 3),
            "contrast": round(self.contrast, 3),
            "gamma": round(self.gamma, 3),
            "downscale": round(self.downscale, 3),
            "noise": round(self.noise, 2),
            "blur_prob": round(self.blur_prob, 3),
            "jpeg_quality": list(self.jpeg_quality),
        }


def _r(values: tuple[float, ...]) -> list[float]:
    return [round(v, 3) for v in values]


def _spread(base: float, index: int, step: float) -> float:
    """A low-discrepancy value in [-1, 1): consecutive cameras differ strongly."""
    return ((base + index * step) % 1.0) * 2.0 - 1.0


@lru_cache(maxsize=256)
def camera_profile(seed: int, index: int, difficulty: float) -> CameraProfile:
    """The profile of camera ``index`` (0-based) for ``seed`` at ``difficulty`` (0..3)."""
    st = strength(difficulty)
    c, s = st.colour, st.imaging
    shared = np.random.default_rng([seed, STREAM_CAMERA])
    order = shared.permutation(len(FAMILIES))
    bases = shared.random(4)
    rng = np.random.default_rng([seed, STREAM_CAMERA, index])
    # character of the camera, independent of difficulty
    u_temp = _spread(bases[0], index, 0.618034)
    u_gain = _spread(bases[1], index, 0.414214)
    u_sat = _spread(bases[2], index, 0.732051)
    u_tint, u_con, u_gam = rng.uniform(-1.0, 1.0, 3)
    low_res = rng.random() < 0.4
    u_res, u_noise, u_blur, u_jpeg = rng.uniform(0.0, 1.0, 4)
    kind = rng.choice(3, p=[0.4, 0.35, 0.25])
    if kind == 0:  # corridor: people walk towards / away from the camera
        alpha = (6.0, 5.0, 1.0, 1.0)
    elif kind == 1:  # crossing: people walk across the view
        alpha = (1.0, 1.0, 5.0, 5.0)
    else:
        alpha = (3.0, 3.0, 3.0, 3.0)
    views = rng.dirichlet(alpha)
    horizon = float(rng.uniform(0.3, 0.55))
    position = float(rng.uniform(0.0, 400.0))
    # imaging parameters scaled by difficulty
    temp = 0.32 * c * u_temp
    tint = 0.10 * c * u_tint
    gains = np.exp(np.array([temp, tint, -temp]))
    gains = gains / float(_LUMA @ gains)
    return CameraProfile(
        index=index,
        background=FAMILIES[int(order[index % len(FAMILIES)])],
        horizon=horizon,
        position_m=position,
        view_probs=tuple(float(v) for v in views),  # type: ignore[arg-type]
        gain=math.exp(0.45 * c * u_gain),
        channel_gain=tuple(float(g) for g in gains),  # type: ignore[arg-type]
        saturation=math.exp(0.55 * c * u_sat - 0.1 * c),
        contrast=math.exp(0.25 * c * u_con),
        gamma=math.exp(0.3 * c * u_gam),
        downscale=1.0 / (1.0 + s * (1.4 * (0.5 + 0.5 * u_res) if low_res else 0.25 * u_res)),
        noise=1.0 + 7.0 * s * (0.3 + 0.7 * u_noise),
        blur_prob=0.05 * s + 0.3 * s * u_blur,
        blur_len=0.03 + 0.08 * s * u_blur,
        jpeg_quality=(
            round(95 - 45 * s * (0.4 + 0.6 * u_jpeg)),
            min(98, round(98 - 25 * s * u_jpeg)),
        ),
    )


@lru_cache(maxsize=64)
def camera_texture(seed: int, index: int, height: int, width: int) -> np.ndarray:
    """The wide background texture of camera ``index`` for crops of ``height`` x ``width``."""
    prof = camera_profile(seed, index, 0.0)
    rng = np.random.default_rng([seed, STREAM_CAMERA, index, 1])
    tex = make_background(
        prof.background, rng, int(height * 1.35), width * TEXTURE_WIDTH, prof.horizon
    )
    tex.setflags(write=False)
    return tex


def background_crop(
    seed: int, index: int, height: int, width: int, rng: np.random.Generator
) -> np.ndarray:
    """A random ``height`` x ``width`` crop (writable copy) of the camera's background."""
    tex = camera_texture(seed, index, height, width)
    y0 = int(rng.integers(0, tex.shape[0] - height + 1))
    x0 = int(rng.integers(0, tex.shape[1] - width + 1))
    crop = tex[y0 : y0 + height, x0 : x0 + width]
    return crop[:, ::-1].copy() if rng.random() < 0.5 else crop.copy()


def _motion_blur(img: np.ndarray, length: float, angle: float) -> np.ndarray:
    k = max(2, round(length))
    kernel = np.zeros((k, k), np.float32)
    kernel[k // 2, :] = 1.0
    rot = cv2.getRotationMatrix2D(((k - 1) / 2.0, (k - 1) / 2.0), angle, 1.0)
    kernel = cv2.warpAffine(kernel, rot, (k, k))
    kernel /= max(float(kernel.sum()), 1e-6)
    return cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_REFLECT)


def apply_camera(
    img: np.ndarray, prof: CameraProfile, rng: np.random.Generator, difficulty: float
) -> tuple[np.ndarray, int]:
    """Image an RGB ``uint8`` scene through camera ``prof``.

    Returns the degraded ``uint8`` image and the JPEG quality to save it with.
    """
    s = strength(difficulty).imaging
    h, w = img.shape[:2]
    x = img.astype(np.float32) * (1.0 / 255.0)
    if rng.random() < prof.blur_prob:
        x = _motion_blur(x, prof.blur_len * w * rng.uniform(0.5, 1.5), rng.normal(0.0, 20.0))
    gain = prof.gain * math.exp(rng.normal(0.0, 0.03 + 0.08 * s))
    x *= np.asarray(prof.channel_gain, np.float32) * np.float32(gain)
    if prof.saturation != 1.0:
        lum = x @ _LUMA
        x = lum[:, :, None] + (x - lum[:, :, None]) * np.float32(prof.saturation)
    np.clip(x, 0.0, 1.0, out=x)
    if prof.gamma != 1.0:
        x **= np.float32(prof.gamma)
    if prof.contrast != 1.0:
        x = (x - 0.45) * np.float32(prof.contrast) + 0.45
    if prof.downscale < 0.98:
        sw, sh = max(4, round(w * prof.downscale)), max(4, round(h * prof.downscale))
        x = cv2.resize(x, (sw, sh), interpolation=cv2.INTER_AREA)
    sigma = prof.noise * (0.8 + 0.4 * rng.random()) / 255.0
    x += rng.standard_normal((*x.shape[:2], 1), dtype=np.float32) * np.float32(sigma)
    x += rng.standard_normal(x.shape, dtype=np.float32) * np.float32(sigma * 0.5)
    if x.shape[0] != h or x.shape[1] != w:
        x = cv2.resize(x, (w, h), interpolation=cv2.INTER_LINEAR)
    out = np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)
    lo, hi = prof.jpeg_quality
    return out, int(rng.integers(lo, hi + 1))
