"""The one preprocessing path: decoded RGB image -> normalised float32 tensor.

Trainer evaluation, export parity checks, the server and gallery ingestion all call
this module with the settings stored in the model's manifest, so an image is
prepared identically wherever it is embedded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from io import BytesIO
from typing import Any

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
}


class PreprocessError(ValueError):
    """An input image cannot be preprocessed (wrong shape, dtype or not decodable)."""


class ImageTooLargeError(PreprocessError):
    """An encoded image has more pixels than allowed (found from its header)."""


@dataclass(frozen=True)
class PreprocessConfig:
    """How a model expects its input: ``[N, 3, height, width]`` float32, RGB, normalised."""

    height: int = 256
    width: int = 128
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    color_order: str = "RGB"
    layout: str = "NCHW"

    def __post_init__(self) -> None:
        if self.height < 8 or self.width < 8:
            raise ValueError(f"input size {self.height}x{self.width} is too small (min 8x8)")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"unknown interpolation {self.interpolation!r}; "
                f"expected one of {', '.join(INTERPOLATIONS)}"
            )
        if self.color_order != "RGB" or self.layout != "NCHW":
            raise ValueError("only RGB colour order and NCHW layout are supported")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std need three values, std strictly positive")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreprocessConfig:
        known = {f: data[f] for f in cls.__dataclass_fields__ if f in data}
        for key in ("mean", "std"):
            if key in known:
                known[key] = tuple(float(v) for v in known[key])
        return cls(**known)


def check_rgb_image(image: np.ndarray) -> np.ndarray:
    """Validate an ``uint8[H, W, 3]`` image; grey ``[H, W]`` and RGBA are converted."""
    if not isinstance(image, np.ndarray):
        raise PreprocessError(f"expected a numpy image array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise PreprocessError(f"expected an uint8 image, got dtype {image.dtype}")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2RGB)
    if image.ndim != 3 or image.shape[2] != 3:
        raise PreprocessError(f"expected an image of shape [H, W, 3], got {list(image.shape)}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise PreprocessError("image has zero height or width")
    return image


def resize_rgb(image: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Resize to the model's input size (no aspect-ratio padding, as in re-ID training)."""
    image = check_rgb_image(image)
    if image.shape[:2] == (config.height, config.width):
        return image
    return cv2.resize(
        image, (config.width, config.height), interpolation=INTERPOLATIONS[config.interpolation]
    )


def normalize_chw(image: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """``uint8[H, W, 3]`` at the model size -> normalised ``float32[3, H, W]``."""
    mean = np.asarray(config.mean, dtype=np.float32) * 255.0
    std = np.asarray(config.std, dtype=np.float32) * 255.0
    chw = image.astype(np.float32).transpose(2, 0, 1)
    return (chw - mean[:, None, None]) / std[:, None, None]


def preprocess_image(image: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """One RGB image of any size -> ``float32[3, H, W]`` ready for the model."""
    return normalize_chw(resize_rgb(image, config), config)


def preprocess_batch(images: Sequence[np.ndarray], config: PreprocessConfig) -> np.ndarray:
    """RGB images of any sizes -> one contiguous ``float32[N, 3, H, W]`` batch."""
    batch = np.empty((len(images), 3, config.height, config.width), dtype=np.float32)
    for i, image in enumerate(images):
        batch[i] = preprocess_image(image, config)
    return batch


def decode_image_bytes(data: bytes, max_pixels: int | None = None) -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, BMP, WebP, ...) to ``uint8[H, W, 3]`` RGB.

    Every image the system embeds goes through this one decoder (files on disk and
    uploads alike), so the same bytes always give the same pixels. Raises
    ``PreprocessError`` for empty, truncated or non-image data, and for images larger
    than ``max_pixels`` (checked from the header, before decoding).
    """
    if not data:
        raise PreprocessError("empty image data (0 bytes)")
    try:
        with Image.open(BytesIO(data)) as image:
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageTooLargeError(
                    f"image is {width}x{height} = {width * height} pixels; "
                    f"the limit is {max_pixels}"
                )
            image.load()
            rgb = image.convert("RGB")
    except Image.DecompressionBombError as exc:
        limit = f" (the limit is {max_pixels})" if max_pixels is not None else ""
        raise ImageTooLargeError(f"image has too many pixels{limit}: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, PreprocessError):
            raise
        raise PreprocessError(
            f"data is not a decodable image (corrupt, truncated or not an image: {exc})"
        ) from None
    return np.asarray(rgb, dtype=np.uint8)
