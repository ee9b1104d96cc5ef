"""Contact sheet of synthetic identities (rows) as seen by each camera (columns).

    python -m reid.data.synthetic.preview OUT.png [--ids 8] [--cameras 6] [--seed 0]
        [--difficulty 2] [--size 128x64] [--zoom 2]

Nothing is written to disk except the PNG; handy to see what a seed and a
difficulty look like before generating a dataset.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import cv2
import numpy as np

from reid.data.synthetic.camera import camera_profile
from reid.data.synthetic.generate import parse_size
from reid.data.synthetic.identity import identity_for
from reid.data.synthetic.scene import render_scene, sample_view

STREAM_PREVIEW = 9


def contact_sheet(
    ids: int = 8,
    cameras: int = 6,
    seed: int = 0,
    difficulty: float = 2.0,
    size: tuple[int, int] = (128, 64),
    jpeg: bool = True,
) -> np.ndarray:
    """An RGB grid: row ``i`` is identity ``i + 1``, column ``c`` camera ``c + 1``."""
    h, w = size
    sheet = np.full((ids * (h + 2), cameras * (w + 2), 3), 255, np.uint8)
    for i in range(ids):
        ident = identity_for(seed, i + 1)
        for c in range(cameras):
            prof = camera_profile(seed, c, difficulty)
            rng = np.random.default_rng([seed, STREAM_PREVIEW, i, c])
            img, quality = render_scene(
                ident, prof, sample_view(rng, prof), rng, size, difficulty, seed
            )
            if jpeg:
                _, buf = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
                img = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]
            y, x = i * (h + 2), c * (w + 2)
            sheet[y : y + h, x : x + w] = img
    return sheet


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m reid.data.synthetic.preview", description=__doc__
    )
    parser.add_argument("out", help="PNG file to write")
    parser.add_argument("--ids", type=int, default=8)
    parser.add_argument("--cameras", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--difficulty", type=float, default=2.0)
    parser.add_argument("--size", type=parse_size, default=(128, 64), help="HxW, e.g. 128x64")
    parser.add_argument("--zoom", type=int, default=2, help="integer upscaling for viewing")
    args = parser.parse_args(argv)
    sheet = contact_sheet(args.ids, args.cameras, args.seed, args.difficulty, args.size)
    if args.zoom > 1:
        sheet = cv2.resize(sheet, None, fx=args.zoom, fy=args.zoom, interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(args.out, sheet[:, :, ::-1])
    print(f"wrote {args.out}: {args.ids} identities x {args.cameras} cameras")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
