"""Planning and writing a synthetic dataset in the Market-1501 layout, and the CLI.

The whole dataset is *planned* first (who appears in which camera, when, in which
split, under which file name) from per-identity random streams; each image is then
rendered from its own stream ``(seed, stream, key, index)``, so the files are
byte-identical for a seed whatever the number of workers.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from reid.clihelp import HelpFormatter
from reid.data.synthetic.camera import camera_profile
from reid.data.synthetic.difficulty import MAX_DIFFICULTY
from reid.data.synthetic.identity import (
    STREAM_OTHER_PERSON,
    identity_for,
    sample_identity,
)
from reid.data.synthetic.scene import render_scene, sample_view

GENERATOR_NAME = "reid.data.synthetic"
FORMAT_VERSION = 1
FPS = 25
SUBDIRS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}

STREAM_PERSON_IMAGE = 10
STREAM_DISTRACTOR = 20
STREAM_JUNK = 30
STREAM_JUNK_PERSON = 31
STREAM_PLAN = 40
STREAM_EXTRAS = 41

MAX_CAMERAS = 9  # Market-style names have a single camera digit
MAX_PIDS = 9999  # four-digit identity labels
MAX_FRAME = 999_999  # six-digit frame numbers


@dataclass(frozen=True)
class GeneratorParams:
    """Everything that determines a synthetic dataset (the CLI options)."""

    ids_train: int = 150
    ids_test: int = 100
    cameras: int = 6
    seed: int = 0
    height: int = 128
    width: int = 64
    difficulty: float = 2.0
    images_per_id: float = 14.0
    query_prob: float = 0.7
    distractors: int | None = None  # None: 10% of the test identities' images
    junk: int | None = None  # None: 3% of the test identities' images
    pid_offset: int = 0  # identities are numbered pid_offset + 1, pid_offset + 2, ...

    def validate(self) -> None:
        """Raise ``ValueError`` with a readable message for out-of-range values."""
        if self.ids_train < 0:
            raise ValueError(f"ids_train must be >= 0, got {self.ids_train}")
        if self.ids_test < 1:
            raise ValueError(f"ids_test must be >= 1, got {self.ids_test}")
        if self.pid_offset < 0:
            raise ValueError(f"pid_offset must be >= 0, got {self.pid_offset}")
        if self.pid_offset + self.ids_train + self.ids_test > MAX_PIDS:
            raise ValueError(
                f"pid_offset + ids_train + ids_test must be <= {MAX_PIDS} (4-digit labels), "
                f"got {self.pid_offset + self.ids_train + self.ids_test}"
            )
        if not 2 <= self.cameras <= MAX_CAMERAS:
            raise ValueError(f"cameras must be in 2..{MAX_CAMERAS}, got {self.cameras}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if not (16 <= self.height <= 1024 and 8 <= self.width <= 1024):
            raise ValueError(f"size must be within 16..1024 x 8..1024, got {self.size_text}")
        if not 0.0 <= self.difficulty <= MAX_DIFFICULTY:
            raise ValueError(f"difficulty must be in 0..3, got {self.difficulty}")
        if self.images_per_id < 2:
            raise ValueError(f"images_per_id must be >= 2, got {self.images_per_id}")
        if not 0.0 < self.query_prob <= 1.0:
            raise ValueError(f"query_prob must be in (0, 1], got {self.query_prob}")
        for name in ("distractors", "junk"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")

    @property
    def size(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def size_text(self) -> str:
        return f"{self.height}x{self.width}"


@dataclass(frozen=True)
class ImageJob:
    """One file to render: where it goes and the seed material it is rendered from."""

    split: str  # train / query / gallery
    filename: str
    mode: str  # person / partial / junk
    stream: int
    key: int  # pid for identities, running index for distractors and junk
    index: int
    cam: int  # 0-based
    view: str
    base_scale: float


def market_name(pid: int, cam: int, frame: int, box: int, seq: int = 1) -> str:
    """Market-1501 file name; ``cam`` is 0-based here and 1-based in the name."""
    if not (0 <= frame <= MAX_FRAME and 0 <= box <= 99 and 0 <= cam < MAX_CAMERAS):
        raise ValueError(f"cannot name frame {frame}, box {box}, camera {cam} Market-style")
    label = "-1" if pid < 0 else f"{pid:04d}"
    return f"{label}_c{cam + 1}s{seq}_{frame:06d}_{box:02d}.jpg"


def _unique_name(used: set[str], pid: int, cam: int, frame: int, box: int) -> tuple[str, int]:
    while True:
        name = market_name(pid, cam, frame, box)
        if name not in used:
            used.add(name)
            return name, box
        box += 1
        if box > 99:
            frame, box = frame + 1, 1


def _period_s(params: GeneratorParams) -> float:
    """Length of the time window in which identities enter the camera network."""
    return float(min(25000.0, max(600.0, 6.0 * (params.ids_train + params.ids_test))))


def _plan_identity(params: GeneratorParams, pid: int, split: str, used: set[str]) -> list[ImageJob]:
    """Tracklets of one identity: which cameras, how many images, when and from where."""
    rng = np.random.default_rng([params.seed, STREAM_PLAN, pid])
    C = params.cameras
    k = 2 + int(rng.binomial(C - 2, 0.45)) if C > 2 else 2
    cams = [int(c) for c in rng.choice(C, k, replace=False)]
    profiles = {c: camera_profile(params.seed, c, params.difficulty) for c in cams}
    min_per = 2 if split == "test" else 1
    total = max(k * min_per, round(params.images_per_id * math.exp(rng.normal(0.0, 0.3))))
    extra = rng.multinomial(total - k * min_per, rng.dirichlet(np.full(k, 2.0)))
    counts = [min_per + int(e) for e in extra]
    # walk through the network: cameras in order of position, at walking speed
    order = sorted(range(k), key=lambda i: profiles[cams[i]].position_m)
    if rng.random() < 0.5:
        order.reverse()
    t = rng.uniform(0.0, _period_s(params))
    speed = rng.uniform(1.0, 1.6)
    last_pos = profiles[cams[order[0]]].position_m
    jobs: list[ImageJob] = []
    index = 0
    tracklets: list[list[ImageJob]] = []
    for i in order:
        cam, prof = cams[i], profiles[cams[i]]
        t += abs(prof.position_m - last_pos) / speed + rng.uniform(2.0, 30.0)
        last_pos = prof.position_m
        frame = int(t * FPS)
        view = sample_view(rng, prof)
        scale = rng.uniform(0.86, 0.97)
        box = int(rng.integers(1, 5))
        tracklet = []
        for _ in range(counts[i]):
            frame += int(rng.integers(4, 16))
            if rng.random() < 0.1:  # the person turns
                view = sample_view(rng, prof)
            name, box = _unique_name(used, pid, cam, frame, box)
            job = ImageJob(
                split="train" if split == "train" else "gallery",
                filename=name,
                mode="person",
                stream=STREAM_PERSON_IMAGE,
                key=pid,
                index=index,
                cam=cam,
                view=view,
                base_scale=float(scale + rng.normal(0.0, 0.015)),
            )
            tracklet.append(job)
            index += 1
        t = frame / FPS
        tracklets.append(tracklet)
    if split == "test":
        picks = [j for j in range(k) if rng.random() < params.query_prob]
        if not picks:
            picks = [int(rng.integers(k))]
        for j in picks:
            q = int(rng.integers(len(tracklets[j])))
            tracklets[j][q] = replace(tracklets[j][q], split="query")
    for tracklet in tracklets:
        jobs.extend(tracklet)
    return jobs


def plan_dataset(params: GeneratorParams) -> list[ImageJob]:
    """Every image of the dataset, in a fixed order (rendering can happen in any order)."""
    params.validate()
    used: set[str] = set()
    jobs: list[ImageJob] = []
    first = params.pid_offset + 1
    for pid in range(first, first + params.ids_train):
        jobs.extend(_plan_identity(params, pid, "train", used))
    test: list[ImageJob] = []
    for pid in range(first + params.ids_train, first + params.ids_train + params.ids_test):
        test.extend(_plan_identity(params, pid, "test", used))
    jobs.extend(test)
    n_distractors, n_junk = resolved_extras(params, len(test))
    max_frame = int((_period_s(params) + 600.0) * FPS)
    for j in range(n_distractors + n_junk):
        distractor = j < n_distractors
        key = j if distractor else j - n_distractors
        rng = np.random.default_rng([params.seed, STREAM_EXTRAS, int(distractor), key])
        cam = int(rng.integers(params.cameras))
        prof = camera_profile(params.seed, cam, params.difficulty)
        frame = int(rng.integers(1, max_frame))
        pid = 0 if distractor else -1
        name, _ = _unique_name(used, pid, cam, frame, int(rng.integers(0, 8)))
        mode = ("person" if rng.random() < 0.65 else "partial") if distractor else "junk"
        stream = STREAM_DISTRACTOR if distractor else STREAM_JUNK
        job = ImageJob(
            split="gallery",
            filename=name,
            mode=mode,
            stream=stream,
            key=key,
            index=0,
            cam=cam,
            view=sample_view(rng, prof),
            base_scale=float(rng.uniform(0.85, 0.97)),
        )
        jobs.append(job)
    return jobs


def resolved_extras(params: GeneratorParams, n_test_images: int) -> tuple[int, int]:
    """Numbers of distractor and junk images (explicit, or derived from the test size)."""
    d = params.distractors if params.distractors is not None else round(0.10 * n_test_images)
    j = params.junk if params.junk is not None else max(1, round(0.03 * n_test_images))
    return d, j


def render_job(job: ImageJob, params: GeneratorParams) -> bytes:
    """Render one planned image and return its JPEG bytes."""
    seed = params.seed
    rng = np.random.default_rng([seed, job.stream, job.key, job.index])
    if job.stream == STREAM_PERSON_IMAGE:
        ident = identity_for(seed, job.key)
    elif job.stream == STREAM_DISTRACTOR:
        ident = sample_identity(np.random.default_rng([seed, STREAM_OTHER_PERSON, job.key]))
    else:
        ident = sample_identity(np.random.default_rng([seed, STREAM_JUNK_PERSON, job.key]))
    prof = camera_profile(seed, job.cam, params.difficulty)
    img, quality = render_scene(
        ident, prof, job.view, rng, params.size, params.difficulty, seed, job.base_scale, job.mode
    )
    ok, buf = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV always encodes a valid uint8 image
        raise RuntimeError(f"JPEG encoding failed for {job.filename}")
    return buf.tobytes()


def _write(args: tuple[ImageJob, GeneratorParams, str]) -> None:
    job, params, out = args
    path = os.path.join(out, SUBDIRS[job.split], job.filename)
    with open(path, "wb") as f:
        f.write(render_job(job, params))


def _init_worker() -> None:
    cv2.setNumThreads(1)


def count_summary(jobs: Sequence[ImageJob]) -> dict[str, dict[str, int]]:
    """The ``counts`` block of meta.json."""

    def ids(split: str) -> int:
        return len({j.key for j in jobs if j.split == split and j.stream == STREAM_PERSON_IMAGE})

    def n(split: str, stream: int | None = None) -> int:
        return sum(1 for j in jobs if j.split == split and (stream is None or j.stream == stream))

    return {
        "train": {"ids": ids("train"), "images": n("train")},
        "query": {"ids": ids("query"), "images": n("query")},
        "gallery": {
            "ids": ids("gallery"),
            "images": n("gallery"),
            "distractors": n("gallery", STREAM_DISTRACTOR),
            "junk": n("gallery", STREAM_JUNK),
        },
    }


def generate(
    out: str | Path,
    params: GeneratorParams,
    workers: int = 1,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Write the dataset to ``out`` and return the meta.json content.

    Refuses (``FileExistsError``) to write into a non-empty ``out`` unless ``force``;
    with ``force`` only the generator's own outputs (split folders, meta.json) are
    replaced.
    """
    params.validate()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise FileExistsError(
                f"output directory {out} is not empty; pass --force to overwrite it"
            )
        for sub in SUBDIRS.values():
            shutil.rmtree(out / sub, ignore_errors=True)
        (out / "meta.json").unlink(missing_ok=True)
    for sub in SUBDIRS.values():
        (out / sub).mkdir(parents=True, exist_ok=True)
    jobs = plan_dataset(params)
    tasks = [(job, params, str(out)) for job in jobs]
    if workers <= 1:
        for i, task in enumerate(tasks):
            _write(task)
            if progress is not None:
                progress(i + 1, len(tasks))
    else:
        import multiprocessing as mp

        # "spawn": forking a process whose OpenCV / BLAS thread pools are running can
        # deadlock the children; fresh interpreters are safe on every platform.
        with mp.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
            for i, _ in enumerate(pool.imap_unordered(_write, tasks, chunksize=32)):
                if progress is not None:
                    progress(i + 1, len(tasks))
    n_test = sum(1 for j in jobs if j.stream == STREAM_PERSON_IMAGE and j.split != "train")
    n_distractors, n_junk = resolved_extras(params, n_test)
    param_block = asdict(params)
    param_block.update(size=params.size_text, distractors=n_distractors, junk=n_junk)
    meta = {
        "generator": GENERATOR_NAME,
        "version": FORMAT_VERSION,
        "params": param_block,
        "counts": count_summary(jobs),
        "cameras": [
            camera_profile(params.seed, c, params.difficulty).describe()
            for c in range(params.cameras)
        ],
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


# ----------------------------------------------------------------------------- CLI


def parse_size(text: str) -> tuple[int, int]:
    """``"128x64"`` -> ``(128, 64)`` (height, width); an argparse ``type``."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"size must be HxW, e.g. 128x64; got {text!r}")
    h, w = int(parts[0]), int(parts[1])
    if not (16 <= h <= 1024 and 8 <= w <= 1024):
        raise argparse.ArgumentTypeError(f"size {text!r} out of range (16..1024 x 8..1024)")
    return h, w


def _bounded(kind: type, lo: float, hi: float | None, what: str) -> Callable[[str], float]:
    def convert(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number, got {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            bound = f"between {lo:g} and {hi:g}" if hi is not None else f">= {lo:g}"
            raise argparse.ArgumentTypeError(f"{what} must be {bound}, got {text}")
        return value

    return convert


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m reid.data.synthetic``."""
    d = GeneratorParams()
    p = argparse.ArgumentParser(
        prog="python -m reid.data.synthetic",
        description="Generate a synthetic multi-camera person re-ID dataset in the "
        "Market-1501 layout (bounding_box_train/, bounding_box_test/, query/, meta.json).",
        formatter_class=HelpFormatter,
    )
    p.add_argument("out", type=Path, help="output directory (created; must be empty)")
    p.add_argument(
        "--ids-train",
        type=_bounded(int, 0, MAX_PIDS, "--ids-train"),
        default=d.ids_train,
        metavar="N",
        help="identities of the training split",
    )
    p.add_argument(
        "--ids-test",
        type=_bounded(int, 1, MAX_PIDS, "--ids-test"),
        default=d.ids_test,
        metavar="N",
        help="identities of the query/gallery splits (disjoint from the training ones)",
    )
    p.add_argument(
        "--cameras",
        type=_bounded(int, 2, MAX_CAMERAS, "--cameras"),
        default=d.cameras,
        metavar="N",
        help=f"cameras (2 to {MAX_CAMERAS})",
    )
    p.add_argument(
        "--seed",
        type=_bounded(int, 0, None, "--seed"),
        default=d.seed,
        metavar="N",
        help="random seed: the same seed and options give the same dataset",
    )
    p.add_argument(
        "--size",
        type=parse_size,
        default=f"{d.size[0]}x{d.size[1]}",
        metavar="HxW",
        help="image size, height x width",
    )
    p.add_argument(
        "--difficulty",
        type=_bounded(float, 0, MAX_DIFFICULTY, "--difficulty"),
        default=d.difficulty,
        help="nuisance strength 0 (nearly clean) .. 3 (very hard)",
    )
    p.add_argument(
        "--images-per-id",
        type=_bounded(float, 2, 1000, "--images-per-id"),
        default=d.images_per_id,
        help="mean number of images per identity (all cameras)",
    )
    p.add_argument(
        "--query-prob",
        type=_bounded(float, 0.01, 1, "--query-prob"),
        default=d.query_prob,
        help="chance that a test identity gets a query in each of its cameras",
    )
    p.add_argument(
        "--distractors",
        type=_bounded(int, 0, None, "--distractors"),
        default=None,
        help="distractor images (pid 0) in the gallery (default: 10%% of test images)",
    )
    p.add_argument(
        "--junk",
        type=_bounded(int, 0, None, "--junk"),
        default=None,
        help="junk images (pid -1) in the gallery (default: 3%% of test images)",
    )
    p.add_argument(
        "--pid-offset",
        type=_bounded(int, 0, MAX_PIDS - 1, "--pid-offset"),
        default=d.pid_offset,
        metavar="N",
        help="number the identities from N + 1 (a second set whose labels never collide "
        "with a first one's, e.g. a labelled reference set beside a target set)",
    )
    p.add_argument(
        "--workers",
        type=_bounded(int, 0, 256, "--workers"),
        default=0,
        help="rendering processes; 0 = one per CPU core (max 8)",
    )
    p.add_argument("--force", action="store_true", help="overwrite a non-empty OUT")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    params = GeneratorParams(
        ids_train=int(args.ids_train),
        ids_test=int(args.ids_test),
        cameras=int(args.cameras),
        seed=int(args.seed),
        height=args.size[0],
        width=args.size[1],
        difficulty=float(args.difficulty),
        images_per_id=float(args.images_per_id),
        query_prob=float(args.query_prob),
        distractors=None if args.distractors is None else int(args.distractors),
        junk=None if args.junk is None else int(args.junk),
        pid_offset=int(args.pid_offset),
    )
    try:
        params.validate()
    except ValueError as exc:
        parser.error(str(exc))
    out: Path = args.out
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.force:
        parser.error(f"output directory {out} is not empty; pass --force to overwrite it")
    workers = args.workers or min(8, os.cpu_count() or 1)
    start = time.perf_counter()
    try:
        meta = generate(out, params, workers=workers, force=args.force)
    except FileExistsError as exc:
        parser.error(str(exc))
    elapsed = time.perf_counter() - start
    c = meta["counts"]
    total = c["train"]["images"] + c["query"]["images"] + c["gallery"]["images"]
    print(
        f"synthetic re-ID dataset written to {out} (seed {params.seed}, "
        f"difficulty {params.difficulty:g}, {params.cameras} cameras, {params.size_text})"
    )
    print(f"  train   : {c['train']['ids']:5d} ids {c['train']['images']:7d} images")
    print(f"  query   : {c['query']['ids']:5d} ids {c['query']['images']:7d} images")
    g = c["gallery"]
    print(
        f"  gallery : {g['ids']:5d} ids {g['images']:7d} images "
        f"(incl. {g['distractors']} distractors, {g['junk']} junk)"
    )
    print(
        f"  {total} images in {elapsed:.1f} s ({total / max(elapsed, 1e-9):.0f} images/s, "
        f"{workers} worker{'s' if workers != 1 else ''})"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
