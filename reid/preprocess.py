"""The one preprocessing path: decoded RGB image -> normalised float32 tensor.

Trainer evaluation, export parity checks, the server and gallery ingestion all call
this module with the settings stored in the model's manifest, so an image is
prepared identically wherever it is embedded.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from io import BytesIO
from typing import Any

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

try:  # libjpeg-turbo through its TurboJPEG API: JPEG headers and decoding, no Pillow objects
    import simplejpeg
except ImportError:  # pragma: no cover - a dependency; without it Pillow decodes every JPEG
    simplejpeg = None

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


@functools.lru_cache(maxsize=16)
def _mean_std(config: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    """``float32[3, 1, 1]`` mean and std on the 0..255 scale (cached per config)."""
    mean = np.asarray(config.mean, dtype=np.float32) * 255.0
    std = np.asarray(config.std, dtype=np.float32) * 255.0
    return mean[:, None, None], std[:, None, None]


def normalize_chw(
    image: np.ndarray, config: PreprocessConfig, out: np.ndarray | None = None
) -> np.ndarray:
    """``uint8[H, W, 3]`` at the model size -> normalised ``float32[3, H, W]``.

    ``(pixel - mean) / std`` per channel, written into ``out`` when given (a
    ``float32[3, H, W]`` array, e.g. one image of a batch): no temporary arrays.
    """
    mean, std = _mean_std(config)
    if out is None:
        out = np.empty((3, *image.shape[:2]), dtype=np.float32)
    np.subtract(image.transpose(2, 0, 1), mean, out=out, dtype=np.float32)
    return np.divide(out, std, out=out)


def preprocess_image(image: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """One RGB image of any size -> ``float32[3, H, W]`` ready for the model."""
    return normalize_chw(resize_rgb(image, config), config)


def preprocess_batch(images: Sequence[np.ndarray], config: PreprocessConfig) -> np.ndarray:
    """RGB images of any sizes -> one contiguous ``float32[N, 3, H, W]`` batch."""
    batch = np.empty((len(images), 3, config.height, config.width), dtype=np.float32)
    for i, image in enumerate(images):
        normalize_chw(resize_rgb(image, config), config, out=batch[i])
    return batch


_OBJECT_REPR = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")

_REDUCIBLE = {"L", "LA", "RGB", "RGBA"}
"""Modes ``Image.reduce`` averages correctly (a palette or 1-bit image is converted first)."""


class UnsupportedImageError(PreprocessError):
    """A decodable image in a pixel format that is not embedded (floating-point samples)."""


def _clean(error: BaseException) -> str:
    """The decoder's message without object reprs (``<_io.BytesIO object at 0x...>``)."""
    return _OBJECT_REPR.sub("the data", str(error)).strip() or type(error).__name__


def _open_image(data: bytes) -> Image.Image:
    try:
        return Image.open(BytesIO(data))
    except UnidentifiedImageError:
        raise PreprocessError(
            "data is not a decodable image (not in a format that is read: JPEG, PNG, WebP, "
            "BMP, GIF, TIFF...)"
        ) from None


_JPEG_MAGIC = b"\xff\xd8\xff"
_TURBO_COLORSPACES = frozenset({"Gray", "YCbCr", "RGB"})
"""JPEG colour spaces decoded by libjpeg-turbo directly (CMYK and YCCK go through Pillow,
which undoes Adobe's inverted CMYK)."""


def _jpeg_header(data: bytes) -> tuple[int, int, str] | None:
    """``(width, height, colorspace)`` of a JPEG that libjpeg-turbo reads, else None.

    None also for images Pillow would call a decompression bomb (Pillow then says so).
    """
    if simplejpeg is None or not data.startswith(_JPEG_MAGIC):
        return None
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    bomb = Image.MAX_IMAGE_PIXELS
    if bomb is not None and width * height > 2 * bomb:
        return None
    return width, height, colorspace


def image_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` of encoded image bytes, from the header alone (nothing decoded)."""
    if not data:
        raise PreprocessError("empty image data (0 bytes)")
    header = _jpeg_header(data)
    if header is not None:
        return header[0], header[1]
    try:
        with _open_image(data) as image:
            return image.size
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"image has too many pixels: {_clean(exc)}") from None
    except PreprocessError:
        raise
    except Exception as exc:
        raise _undecodable(exc) from None


def _sixteen_bit(image: Image.Image) -> bool:
    """A 32-bit integer (``I``) image that really holds 16-bit samples (PNG, 16-bit TIFF)."""
    if image.format == "PNG":
        return True
    bits = getattr(image, "tag_v2", {}).get(258)  # TIFF BitsPerSample
    if isinstance(bits, tuple):
        bits = bits[0] if bits else None
    return isinstance(bits, int) and bits <= 16


def _to_8bit(image: Image.Image) -> Image.Image:
    """Deep grey images (16-bit ``I;16*``, 16-bit ``I``) scaled to 8 bits, not clipped
    (``convert`` would saturate every value over 255); floating-point images refused."""
    mode = image.mode
    if mode.startswith("I;16") or (mode == "I" and _sixteen_bit(image)):
        samples = np.asarray(image)
        if mode == "I":
            samples = np.clip(samples, 0, 65535)
        return Image.fromarray((samples >> 8).astype(np.uint8), mode="L")
    if mode in ("I", "F") or mode.startswith(("I;32", "F;")):
        kind = "floating-point" if mode.startswith("F") else "32-bit integer"
        raise UnsupportedImageError(
            f"{kind} images (mode {mode}) are not supported; send 8- or 16-bit images"
        )
    return image


def decode_image_bytes(
    data: bytes, max_pixels: int | None = None, *, min_size: tuple[int, int] | None = None
) -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, BMP, WebP, ...) to ``uint8[H, W, 3]`` RGB.

    Every image the system embeds goes through this one decoder (files on disk and
    uploads alike), so the same bytes always give the same pixels. Raises
    ``PreprocessError`` for empty, truncated or non-image data, and for images larger
    than ``max_pixels`` (checked from the header, before decoding);
    ``UnsupportedImageError`` for floating-point images. 16-bit images are scaled to 8
    bits; the first frame of an animation is taken; alpha is dropped.

    ``min_size=(height, width)`` bounds memory for large images: an image at least twice
    that large in both dimensions is shrunk by an integer factor as it is decoded (a
    JPEG is decoded at 1/2, 1/4 or 1/8 scale by the JPEG decoder itself, then the rest
    is box-averaged), never below ``min_size``. The server passes its model input size;
    smaller images are decoded exactly as without it.
    """
    if not data:
        raise PreprocessError("empty image data (0 bytes)")
    header = _jpeg_header(data)
    if header is not None and header[2] in _TURBO_COLORSPACES:
        width, height, _ = header
        _check_pixels(width, height, max_pixels)
        rgb = _decode_jpeg_turbo(data, width, height, min_size)
        if rgb is not None:
            return rgb
    try:
        with _open_image(data) as image:
            width, height = image.size
            _check_pixels(width, height, max_pixels)
            factor = 1
            if min_size is not None:
                need_h, need_w = max(1, int(min_size[0])), max(1, int(min_size[1]))
                factor = min(width // need_w, height // need_h)
                if factor >= 2 and image.format == "JPEG":
                    image.draft(None, (need_w, need_h))  # DCT scaling: decode less
                    factor = min(image.size[0] // need_w, image.size[1] // need_h)
            image.load()
            rgb = _shrunk(image, max(factor, 1))
    except Image.DecompressionBombError as exc:
        limit = f" (the limit is {max_pixels})" if max_pixels is not None else ""
        raise ImageTooLargeError(f"image has too many pixels{limit}: {_clean(exc)}") from None
    except PreprocessError:
        raise
    except (OSError, SyntaxError, ValueError, MemoryError, IndexError, TypeError) as exc:
        raise _undecodable(exc) from None
    return np.asarray(rgb, dtype=np.uint8)


def _check_pixels(width: int, height: int, max_pixels: int | None) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(
            f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )


def _dct_scale(width: int, height: int, min_size: tuple[int, int] | None) -> tuple[int, int]:
    """``(dct, rest)``: the JPEG decoder's 1/dct scale (1, 2, 4 or 8) and the integer
    box reduction after it, shrinking to no less than ``min_size=(height, width)``."""
    if min_size is None:
        return 1, 1
    need_h, need_w = max(1, int(min_size[0])), max(1, int(min_size[1]))
    factor = min(width // need_w, height // need_h)
    dct = 8 if factor >= 8 else 4 if factor >= 4 else 2 if factor >= 2 else 1
    scaled_w, scaled_h = -(-width // dct), -(-height // dct)
    return dct, max(1, min(scaled_w // need_w, scaled_h // need_h))


def _decode_jpeg_turbo(
    data: bytes, width: int, height: int, min_size: tuple[int, int] | None
) -> np.ndarray | None:
    """A JPEG decoded by libjpeg-turbo (TurboJPEG), or None to let Pillow decide.

    The same pixels as Pillow's path (Pillow's wheels decode with libjpeg-turbo too, with
    the same accurate integer IDCT and smooth chroma upsampling): full size, or scaled by
    the DCT at the 1/2, 1/4 or 1/8 Pillow's ``draft`` picks, then box-reduced the same
    way. A JPEG that libjpeg-turbo only warns about (``strict``) goes to Pillow, whose
    rules (and error messages) for damaged files are kept.
    """
    dct, rest = _dct_scale(width, height, min_size)
    target = (-(-height // dct), -(-width // dct))
    try:
        rgb = simplejpeg.decode_jpeg(
            data,
            colorspace="RGB",
            min_height=target[0] if dct > 1 else 0,
            min_width=target[1] if dct > 1 else 0,
            strict=True,
        )
    except ValueError:
        return None
    if rgb.shape != (*target, 3):  # not the scale Pillow would take
        return None
    if rest >= 2:
        rgb = np.asarray(Image.fromarray(rgb).reduce(rest), dtype=np.uint8)
    return rgb


STRIP_ROWS = 512
"""Rows of the decoded image converted at a time (rounded to the shrink factor)."""


def _shrunk(image: Image.Image, factor: int) -> Image.Image:
    """``image`` as 8-bit RGB, box-reduced by ``factor`` (1: the same size), a strip of
    rows at a time.

    Converting or reducing the whole image would copy it (a palette or 16-bit image to
    8-bit RGB, an RGBA one to premultiplied RGBa first): up to 8 bytes a pixel besides
    the decoded image. Strip by strip, only about ``STRIP_ROWS`` rows are copied. The
    conversions are per pixel and the reduction per block, so the pixels are those of
    converting and reducing the whole image.
    """
    if image.mode == "RGB" and factor == 1:
        return image.copy()
    width, height = image.size
    out = Image.new("RGB", (-(-width // factor), -(-height // factor)))
    step = factor * max(1, STRIP_ROWS // factor)
    for top in range(0, height, step):
        strip = _to_8bit(image.crop((0, top, width, min(top + step, height))))
        if factor > 1:
            if strip.mode not in _REDUCIBLE:
                strip = strip.convert("RGBA" if "A" in strip.mode else "RGB")
            strip = strip.reduce(factor)
        out.paste(strip.convert("RGB"), (0, top // factor))
    return out


def _undecodable(error: BaseException) -> PreprocessError:
    return PreprocessError(
        f"data is not a decodable image (corrupt, truncated or not an image: {_clean(error)})"
    )
