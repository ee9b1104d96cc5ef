"""Training augmentations as small composable steps with explicit random generators.

Every step is a callable ``step(x, rng) -> x`` that takes a ``numpy.random.Generator``
and never edits its input in place. Image-space steps work on ``uint8[H, W, 3]`` RGB
arrays; :class:`Normalize` turns the image into a normalised ``float32[3, H, W]``
tensor through :mod:`reid.preprocess` (the one inference path); tensor steps such as
:class:`RandomErasing` come after it.

With every augmentation off, :func:`build_train_transform` returns exactly the tensor
of :func:`reid.preprocess.preprocess_image`. The pipeline order follows
cluster-contrast: resize -> flip -> pad + crop -> (colour jitter) -> normalise ->
random erasing.

:func:`build_surrogate_transform` makes PAUL's surrogate positive of an image (Yang et
al., "Patch-based Discriminative Feature Learning for Unsupervised Person
Re-identification", CVPR 2019): colour jitter (with hue), a small rotation and a crop
of 70-95 % of the area on the original image, then the training pipeline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import cv2
import numpy as np
import torch

from reid.preprocess import PreprocessConfig, normalize_chw, preprocess_image, resize_rgb

Step = Callable[[object, np.random.Generator], object]
PAD_MODES = {"constant": cv2.BORDER_CONSTANT, "reflect": cv2.BORDER_REFLECT_101}
_GREY = np.asarray([0.299, 0.587, 0.114], dtype=np.float32)


class Resize:
    """Resize to the model size with the inference resize (also accepts grey / RGBA)."""

    def __init__(self, config: PreprocessConfig) -> None:
        self.config = config

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return resize_rgb(image, self.config)


class RandomHorizontalFlip:
    """Mirror the image left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        _check_probability("p", p)
        self.p = p

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() < self.p:
            return np.ascontiguousarray(image[:, ::-1])
        return image


class RandomPadCrop:
    """Pad by ``pad`` pixels on every side, then crop a random window of the input size.

    ``mode="constant"`` pads with black (torchvision ``Pad``), ``"reflect"`` mirrors
    without repeating the edge pixel (numpy/torchvision ``reflect``).
    """

    def __init__(self, pad: int = 10, mode: Literal["constant", "reflect"] = "constant") -> None:
        if pad < 0:
            raise ValueError(f"pad must be >= 0, got {pad}")
        if mode not in PAD_MODES:
            raise ValueError(f"unknown pad mode {mode!r}; expected one of {', '.join(PAD_MODES)}")
        self.pad, self.mode = pad, mode

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.pad == 0:
            return image
        height, width = image.shape[:2]
        padded = cv2.copyMakeBorder(
            image, *(self.pad,) * 4, borderType=PAD_MODES[self.mode], value=(0, 0, 0)
        )
        top, left = (int(v) for v in rng.integers(0, 2 * self.pad + 1, size=2))
        return np.ascontiguousarray(padded[top : top + height, left : left + width])


class ColorJitter:
    """Random brightness, contrast and saturation, each factor in ``[1 - s, 1 + s]``, and
    optionally a hue shift by a fraction in ``[-hue, hue]`` of the colour circle.

    Applied in that fixed order on the uint8 image (rounded back to uint8), like
    torchvision's ``ColorJitter`` on PIL images; keep strengths mild (<= 0.4) for re-ID.
    ``hue`` (at most 0.5) rotates the hue channel of OpenCV's HSV (0..179); 0 draws
    nothing, so the random stream of the other three is unchanged.
    """

    def __init__(
        self,
        brightness: float = 0.2,
        contrast: float = 0.2,
        saturation: float = 0.2,
        hue: float = 0.0,
    ) -> None:
        strengths = {"brightness": brightness, "contrast": contrast, "saturation": saturation}
        for name, value in strengths.items():
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if not 0.0 <= hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {hue}")
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation
        self.hue = hue

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = image.astype(np.float32)
        if self.brightness:
            x = np.clip(x * _factor(rng, self.brightness), 0, 255)
        if self.contrast:
            mean = float((x @ _GREY).mean())
            x = np.clip((x - mean) * _factor(rng, self.contrast) + mean, 0, 255)
        if self.saturation:
            grey = (x @ _GREY)[..., None]
            x = np.clip((x - grey) * _factor(rng, self.saturation) + grey, 0, 255)
        out = np.rint(x).astype(np.uint8)
        if self.hue:
            shift = float(rng.uniform(-self.hue, self.hue))
            hsv = cv2.cvtColor(np.ascontiguousarray(out), cv2.COLOR_RGB2HSV)
            turned = (hsv[..., 0].astype(np.int32) + round(shift * 180)) % 180
            hsv[..., 0] = turned.astype(np.uint8)
            out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        return out


class RandomRotation:
    """Rotate about the centre by an angle drawn uniformly from ``[-degrees, degrees]``.

    The canvas keeps its size; uncovered corners are black and pixels are taken by
    nearest neighbour (torchvision ``RandomRotation``'s defaults).
    """

    def __init__(self, degrees: float = 10.0) -> None:
        if not 0.0 <= degrees <= 180.0:
            raise ValueError(f"degrees must be in [0, 180], got {degrees}")
        self.degrees = degrees

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        angle = float(rng.uniform(-self.degrees, self.degrees))
        if not self.degrees:
            return image
        height, width = image.shape[:2]
        matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), angle, 1.0)
        return cv2.warpAffine(
            image, matrix, (width, height), flags=cv2.INTER_NEAREST,
            borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0),
        )  # fmt: skip


class RandomAreaCrop:
    """Crop a random window holding a fraction ``a ~ U(area)`` of the image's area.

    The width is drawn from ``[a * W, W]`` and the height follows (``a * W * H / w``,
    so it never exceeds ``H``); the window is placed uniformly. The crop keeps its own
    size: a later :class:`Resize` brings it to the model size.
    """

    def __init__(self, area: tuple[float, float] = (0.70, 0.95)) -> None:
        if not 0.0 < area[0] <= area[1] <= 1.0:
            raise ValueError(f"area must satisfy 0 < low <= high <= 1, got {area}")
        self.area = (float(area[0]), float(area[1]))

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        height, width = image.shape[:2]
        share = float(rng.uniform(*self.area))
        w = int(rng.uniform(round(share * width), width))
        w = min(max(w, 1), width)
        h = min(max(int(share * height * width / w), 1), height)
        top = int(rng.integers(0, height - h + 1))
        left = int(rng.integers(0, width - w + 1))
        return np.ascontiguousarray(image[top : top + h, left : left + w])


class Normalize:
    """``uint8[H, W, 3]`` at the model size -> normalised ``float32[3, H, W]`` tensor."""

    def __init__(self, config: PreprocessConfig) -> None:
        self.config = config

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(normalize_chw(image, self.config)))


class RandomErasing:
    """Random erasing (Zhong et al., AAAI 2020) on a normalised ``[3, H, W]`` tensor.

    With probability ``p`` one rectangle is erased whose area is a fraction in
    ``scale`` of the image and whose aspect ratio ``h / w`` is drawn uniformly from
    ``ratio`` (as in the paper's code). Up to ``max_attempts`` rectangles are drawn;
    if none fits, the image is returned unchanged.

    ``fill``: ``"mean"`` paints the normalisation mean colour (0 after normalising);
    ``"random"`` paints per-pixel standard-normal noise; a 3-tuple paints those
    values directly in normalised space (cluster-contrast passes ``(0.485, 0.456,
    0.406)`` this way).
    """

    def __init__(
        self,
        p: float = 0.5,
        scale: tuple[float, float] = (0.02, 0.4),
        ratio: tuple[float, float] = (0.3, 3.3),
        fill: Literal["mean", "random"] | tuple[float, float, float] = "mean",
        max_attempts: int = 100,
    ) -> None:
        _check_probability("p", p)
        if not 0.0 < scale[0] <= scale[1] <= 1.0:
            raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {scale}")
        if not 0.0 < ratio[0] <= ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < low <= high, got {ratio}")
        if isinstance(fill, str) and fill not in ("mean", "random"):
            raise ValueError(f"fill must be 'mean', 'random' or 3 values, got {fill!r}")
        if not isinstance(fill, str) and len(fill) != 3:
            raise ValueError(f"fill needs one value per channel, got {fill!r}")
        self.p, self.scale, self.ratio, self.fill = p, scale, ratio, fill
        self.max_attempts = max_attempts

    def get_params(
        self, rng: np.random.Generator, height: int, width: int
    ) -> tuple[int, int, int, int] | None:
        """``(top, left, h, w)`` of a rectangle inside the image, or ``None`` if none fit."""
        area = height * width
        for _ in range(self.max_attempts):
            target = rng.uniform(*self.scale) * area
            aspect = rng.uniform(*self.ratio)
            h = round(float(np.sqrt(target * aspect)))
            w = round(float(np.sqrt(target / aspect)))
            if not (0 < h < height and 0 < w < width):
                continue
            if not self.scale[0] * area <= h * w <= self.scale[1] * area:
                continue  # rounding pushed the area out of bounds
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
        return None

    def __call__(self, tensor: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if rng.random() >= self.p:
            return tensor
        box = self.get_params(rng, tensor.shape[-2], tensor.shape[-1])
        if box is None:
            return tensor
        top, left, h, w = box
        out = tensor.clone()
        region = out[..., top : top + h, left : left + w]
        if self.fill == "random":
            noise = rng.standard_normal(region.shape, dtype=np.float32)
            region.copy_(torch.from_numpy(noise))
        elif self.fill == "mean":
            region.zero_()
        else:
            region.copy_(torch.tensor(self.fill, dtype=out.dtype).view(-1, 1, 1).expand_as(region))
        return out


class Compose:
    """Chain steps; called as ``transform(image, rng=None)``.

    Pass ``rng`` to control the randomness of one call (the dataset does, per sample);
    without it the transform draws from its own generator seeded with ``seed``.
    """

    def __init__(self, steps: Sequence[Step], seed: int | None = None) -> None:
        self.steps = tuple(steps)
        self._rng = np.random.default_rng(seed)

    def __call__(self, image: np.ndarray, rng: np.random.Generator | None = None) -> torch.Tensor:
        rng = self._rng if rng is None else rng
        x: object = image
        for step in self.steps:
            x = step(x, rng)
        return x  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"Compose({', '.join(type(s).__name__ for s in self.steps)})"


class EvalTransform:
    """:func:`reid.preprocess.preprocess_image` as a torch tensor (``rng`` is ignored)."""

    def __init__(self, config: PreprocessConfig) -> None:
        self.config = config

    def __call__(self, image: np.ndarray, rng: np.random.Generator | None = None) -> torch.Tensor:
        return torch.from_numpy(preprocess_image(image, self.config))


def build_train_transform(
    config: PreprocessConfig,
    flip: bool = True,
    pad: int = 10,
    erasing_p: float = 0.5,
    color_jitter: float = 0.0,
    *,
    pad_mode: Literal["constant", "reflect"] = "constant",
    erasing_fill: Literal["mean", "random"] | tuple[float, float, float] = "mean",
    seed: int | None = None,
) -> Compose:
    """The re-ID training pipeline: RGB ``uint8`` image of any size -> ``float32[3, H, W]``.

    ``color_jitter`` is the brightness/contrast/saturation strength (0 = off).
    Disabled augmentations are left out, so with ``flip=False, pad=0, erasing_p=0,
    color_jitter=0`` the output equals ``preprocess_image`` exactly.
    """
    steps: list[Step] = [Resize(config)]
    if flip:
        steps.append(RandomHorizontalFlip(0.5))
    if pad:
        steps.append(RandomPadCrop(pad, pad_mode))
    if color_jitter:
        steps.append(ColorJitter(color_jitter, color_jitter, color_jitter))
    steps.append(Normalize(config))
    if erasing_p:
        steps.append(RandomErasing(erasing_p, fill=erasing_fill))
    return Compose(steps, seed=seed)


def build_surrogate_transform(
    base: Compose,
    *,
    jitter: tuple[float, float, float, float] = (0.2, 0.2, 0.2, 0.1),
    degrees: float = 10.0,
    area: tuple[float, float] = (0.70, 0.95),
) -> Compose:
    """PAUL's surrogate positive: colour jitter ``(brightness, contrast, saturation,
    hue)``, a rotation within ``+-degrees`` and a crop of ``area`` of the image, applied to
    the original image before the training pipeline ``base`` (which resizes it).

    Defaults are the reference code's (QizeYang/PAUL: ``ColorJitter(0.2, 0.2, 0.2, 0.1)``,
    ``RandomRotation(10)``, a crop of 0.70-0.95 of the area). Deterministic for a given
    generator, like every step here.
    """
    steps: list[Step] = [ColorJitter(*jitter), RandomRotation(degrees), RandomAreaCrop(area)]
    return Compose([*steps, *base.steps])


def build_eval_transform(config: PreprocessConfig) -> EvalTransform:
    """The inference preprocessing, returning a tensor; identical to ``preprocess_image``."""
    return EvalTransform(config)


def _factor(rng: np.random.Generator, strength: float) -> float:
    return float(rng.uniform(1.0 - strength, 1.0 + strength))


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
