"""Reading images from disk with clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reid.data.base import DatasetError
from reid.preprocess import PreprocessError, decode_image_bytes


class ImageReadError(DatasetError):
    """A file is missing, empty or not a decodable image."""


def read_image_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as an ``uint8[H, W, 3]`` RGB array.

    Uses the same decoder as uploads to the server (``reid.preprocess``), so a file
    and its bytes sent over HTTP give identical pixels. Raises ``ImageReadError``
    naming the file when it is missing, empty or corrupt.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageReadError(f"{path}: image file not found") from None
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read image file ({exc})") from None
    try:
        return decode_image_bytes(data)
    except PreprocessError as exc:
        raise ImageReadError(f"{path}: {exc}") from None
