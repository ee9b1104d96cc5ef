"""Small JPEG thumbnails of gallery crops."""

from __future__ import annotations

from io import BytesIO

import numpy as np
from PIL import Image


def make_thumbnail(rgb: np.ndarray, max_height: int = 128, quality: int = 85) -> bytes:
    """``uint8[H, W, 3]`` -> JPEG bytes, scaled down (never up) to at most ``max_height``."""
    image = Image.fromarray(rgb, mode="RGB") if rgb.ndim == 3 else Image.fromarray(rgb)
    if image.height > max_height:
        width = max(1, round(image.width * max_height / image.height))
        image = image.resize((width, max_height), Image.Resampling.BILINEAR)
    out = BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=quality)
    return out.getvalue()
