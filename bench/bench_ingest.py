"""Camera ingestion on this CPU: the detector alone, then how many live 5-fps cameras one
machine keeps up with, and how soon what they see is searchable.

    .venv/bin/python bench/bench_ingest.py              # full run, updates docs/BENCHMARKS.md
    .venv/bin/python bench/bench_ingest.py --quick      # short smoke run, writes nothing

1. **Detector**: the pedestrian SSDLite (ONNX under onnxruntime, 1 thread, what
   ``python -m gallery ingest`` runs) on 100 frames of ``vtest.avi`` (768x576, every
   second frame of the first 20 s) at its default 300x300 input: median ms per frame,
   frames/s, detections per frame; and the same frames 4 at a time in one call (what
   batching detections across cameras can gain here).
2. **Live cameras**: N RTSP streams of ``vtest.avi`` (H.264, 10 fps; GStreamer's RTSP
   server, ``tests/rtsp_server.py``) read by one ``python -m gallery ingest --cameras``
   process at 5 fps with ``--max-delay 1``, adding to one ``python -m server`` (ImageNet
   MobileNetV2 at 256x128, onnxruntime); streams, ingester and server all share this
   machine. After a warm-up, over a fixed window, from the ingester's ``/metrics``: each
   camera's processed frames/s, frames dropped, the largest lag seen (scraped every
   second), and frame-to-searchable latency (``reid_ingest_frame_to_ack_seconds``:
   a frame being live -> its entries acknowledged; the server indexes before it answers),
   p50/p99 interpolated within the histogram's buckets as Prometheus'
   ``histogram_quantile`` does; plus the CPU time of each process. N is **sustained**
   when every camera processes >= 95% of its 5 frames/s, drops <= 5% and p99 <= 2 s.
   N starts at ``--start`` and moves by 2 (then 1) towards the largest sustained N.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import math
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # rtsp_stream, video_data: the tests' streams and video
sys.path.insert(0, str(REPO / "scripts"))  # demo, demo_video: free_port, export_model

from _report import machine_summary, today, update_section

SECTION = "## Camera ingestion (python -m gallery ingest)"
COMMAND = ".venv/bin/python bench/bench_ingest.py"
FPS = 5.0
TARGET_P99_S = 2.0
CLK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class DetectorRow:
    ms_per_frame: float
    detections_per_frame: float
    batch4_ms_per_frame: float
    frames: int


@dataclass(frozen=True)
class LiveRun:
    cameras: int
    seconds: float
    fps_min: float
    fps_mean: float
    dropped_pct: float
    lag_max_s: float
    entries: int
    p50_s: float
    p99_s: float
    ingest_cores: float
    server_cores: float
    rtsp_cores: float
    other_cores: float  # everything else on the machine (other jobs, this script)

    @property
    def sustained(self) -> bool:
        return (
            self.fps_min >= 0.95 * FPS
            and self.dropped_pct <= 5.0
            and self.entries > 0
            and self.p99_s <= TARGET_P99_S
        )


# ----------------------------------------------------------------------------- detector


def bench_detector(video: Path) -> DetectorRow:
    import cv2
    import numpy as np

    from gallery.ingest.detector import INPUT_SIZE, SSDLitePedestrianDetector

    capture = cv2.VideoCapture(str(video))
    frames = []
    for index in range(200):
        ok, frame = capture.read()
        if ok and index % 2 == 0:
            frames.append(frame)
    capture.release()
    detector = SSDLitePedestrianDetector(threads=1)
    for frame in frames[:3]:
        detector.detect(frame)
    times, found = [], 0
    for frame in frames:
        start = time.perf_counter()
        found += len(detector.detect(frame))
        times.append(time.perf_counter() - start)
    session, name = detector.session, detector.input
    prepared = [
        cv2.cvtColor(cv2.resize(f, (INPUT_SIZE, INPUT_SIZE)), cv2.COLOR_BGR2RGB) for f in frames
    ]
    batched = []
    for start_index in range(0, len(prepared) - 3, 4):
        block = np.stack(prepared[start_index : start_index + 4])
        start = time.perf_counter()
        session.run(detector.outputs, {name: block})
        batched.append((time.perf_counter() - start) / 4)
    return DetectorRow(
        ms_per_frame=1000 * statistics.median(times),
        detections_per_frame=found / len(frames),
        batch4_ms_per_frame=1000 * statistics.median(batched),
        frames=len(frames),
    )


# ----------------------------------------------------------------------------- live runs


def busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all cores, /proc/stat)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / CLK


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK  # utime + stime


def scrape(url: str) -> list[tuple[str, dict[str, str], float]]:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url, timeout=10).text
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def per_camera(samples: list, name: str) -> dict[str, float]:
    return {labels["camera"]: value for n, labels, value in samples if n == name}


def buckets(samples: list) -> dict[float, float]:
    """Cumulative counts of the frame-to-ack histogram, summed over the cameras."""
    out: dict[float, float] = {}
    for name, labels, value in samples:
        if name == "reid_ingest_frame_to_ack_seconds_bucket":
            bound = float(labels["le"])
            out[bound] = out.get(bound, 0.0) + value
    return out


def quantile(q: float, counts: dict[float, float]) -> float:
    """``histogram_quantile``: linear within the bucket holding the q-th observation."""
    bounds = sorted(counts)
    total = counts[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return math.nan
    rank, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        if counts[bound] >= rank:
            if math.isinf(bound):
                return lower  # beyond the last finite bucket: at least that
            inside = counts[bound] - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, counts[bound]
    return lower


def live_run(
    n: int, urls: list[str], server_url: str, server_pid: int, rtsp_pid: int, work: Path,
    warmup_s: float, window_s: float, run_id: int,
) -> LiveRun:  # fmt: skip
    cameras = work / f"cameras-{n}.yaml"
    lines = ["cameras:"]
    for i in range(n):
        lines.append(f"  - {{id: {run_id * 100 + i}, name: cam{i}, source: '{urls[i]}'}}")
    cameras.write_text("\n".join(lines) + "\n")
    log = work / f"ingest-{n}.log"
    cmd = [
        sys.executable, "-m", "gallery", "ingest", "--cameras", str(cameras),
        "--server", server_url, "--fps", str(FPS), "--max-delay", "1", "--metrics-port", "0",
        "--progress-interval", "10", "--state-dir", str(work / "state"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "client")])}
    with log.open("w") as err:
        child = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        url = _wait(lambda: (re.findall(r"metrics: (http://\S+)", log.read_text()) or [""])[0],
                    60, f"the ingester's metrics ({log})", child)  # fmt: skip
        _wait(lambda: len([v for v in per_camera(scrape(url), "reid_ingest_frames_total").values()
                           if v > 0]) == n, 90, "frames from every camera", child)  # fmt: skip
        time.sleep(warmup_s)
        first, t0 = scrape(url), time.monotonic()
        cpu0 = [cpu_seconds(p) for p in (child.pid, server_pid, rtsp_pid)] + [busy_seconds()]
        lag_max = 0.0
        while time.monotonic() - t0 < window_s:
            time.sleep(1.0)
            lags = per_camera(scrape(url), "reid_ingest_lag_seconds").values()
            lag_max = max([lag_max, *lags])
        last, seconds = scrape(url), time.monotonic() - t0
        cpu1 = [cpu_seconds(p) for p in (child.pid, server_pid, rtsp_pid)] + [busy_seconds()]
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(60)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()

    def delta(name: str) -> dict[str, float]:
        before = per_camera(first, name)
        return {c: v - before.get(c, 0.0) for c, v in per_camera(last, name).items()}

    frames, dropped = delta("reid_ingest_frames_total"), delta("reid_ingest_frames_dropped_total")
    rates = [frames[c] / seconds for c in frames]
    counts0, counts1 = buckets(first), buckets(last)
    window = {b: counts1[b] - counts0.get(b, 0.0) for b in counts1}
    cores = [(b - a) / seconds for a, b in zip(cpu0, cpu1, strict=True)]
    total_frames = sum(frames.values()) + sum(dropped.values())
    return LiveRun(
        cameras=n,
        seconds=seconds,
        fps_min=min(rates),
        fps_mean=statistics.mean(rates),
        dropped_pct=100 * sum(dropped.values()) / max(1.0, total_frames),
        lag_max_s=lag_max,
        entries=int(sum(delta("reid_ingest_entries_total").values())),
        p50_s=quantile(0.5, window),
        p99_s=quantile(0.99, window),
        ingest_cores=cores[0],
        server_cores=cores[1],
        rtsp_cores=cores[2],
        other_cores=max(0.0, cores[3] - sum(cores[:3])),
    )


def _wait(check, timeout: float, what: str, child: subprocess.Popen):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise SystemExit(f"bench_ingest: the ingester exited {child.returncode} ({what})")
        try:
            value = check()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise SystemExit(f"bench_ingest: timed out waiting for {what}")


def next_count(runs: list[LiveRun], largest: int) -> int | None:
    """The next camera count: up by 2 while sustained, down by 2 while not, then the one
    in between; None when the boundary is found (or the counts run out)."""
    ok = [r.cameras for r in runs if r.sustained]
    bad = [r.cameras for r in runs if not r.sustained]
    best, worst = max(ok, default=0), min(bad, default=largest + 1)
    if worst - best <= 1:
        return None
    if not bad:
        return min(best + 2, largest) if best < largest else None
    if not ok:
        return worst - 2 if worst > 2 else (1 if worst == 2 else None)
    return (best + worst) // 2


# ----------------------------------------------------------------------------- report


def start_server(export: Path, work: Path) -> tuple[subprocess.Popen, str]:
    from demo import free_port

    from reid_client import ReIDClient

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (work / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "--model", str(export), "--gallery",
         str(work / "gallery"), "--http-port", str(port), "--no-grpc", "--runtime",
         "onnxruntime", "--device", "cpu", "--no-access-log"],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    with ReIDClient(url, timeout=10) as client:
        client.wait_ready(timeout=180)
    return proc, url


def report(
    detector: DetectorRow, runs: list[LiveRun], args: argparse.Namespace, loads: tuple, took: float
) -> str:
    sustained = [r.cameras for r in runs if r.sustained]
    best = max(sustained, default=0)
    lines = [
        f"`{COMMAND}{' ' + ' '.join(args.argv) if args.argv else ''}` on {today()}. "
        f"Machine: {machine_summary()}. Load average (1 min) at start / end: "
        f"{loads[0]:.1f} / {loads[1]:.1f}. {args.note} Whole run: {took / 60:.1f} min.",
        "",
        "**Detector** (pedestrian SSDLite-MobileNetV2, ONNX under onnxruntime, 1 thread, "
        f"300x300 input) on {detector.frames} frames of `vtest.avi` (768x576, every second "
        "frame of the first 20 s), resize and colour conversion included:",
        "",
        "| detector | input | batch | ms/frame (median) | frames/s | detections/frame |",
        "|---|---|---:|---:|---:|---:|",
        f"| `ssdlite-pedestrian` | 300x300 | 1 | {detector.ms_per_frame:.1f} | "
        f"{1000 / detector.ms_per_frame:.1f} | {detector.detections_per_frame:.2f} |",
        f"| `ssdlite-pedestrian` | 300x300 | 4 (one call) | {detector.batch4_ms_per_frame:.1f} | "
        f"{1000 / detector.batch4_ms_per_frame:.1f} | same |",
        "",
        f"Batching 4 frames per call changed the cost per frame by "
        f"{100 * (detector.batch4_ms_per_frame / detector.ms_per_frame - 1):+.0f}% in this run. "
        "Each camera's thread runs its own detections (onnxruntime releases the GIL; "
        "decoding runs in a reader thread per camera, the adds in one sender thread, "
        "batched across cameras, the embedding in the server).",
        "",
        "**Live cameras**: N RTSP streams of `vtest.avi` (H.264, 768x576, 10 fps, GStreamer's "
        "RTSP server) into one `python -m gallery ingest --cameras cameras.yaml --fps 5 "
        "--max-delay 1` process, adding through one `python -m server` (ImageNet "
        "MobileNetV2 at 256x128, onnxruntime), all on this machine. Window of "
        f"{args.window:g} s after {args.warmup:g} s of warm-up. fps: sampled frames processed "
        "per second per camera (5 asked); lag: the largest `reid_ingest_lag_seconds` "
        "scraped each second (how far behind live a frame was when processed); p50/p99: a "
        "frame being live (its capture time from the stream's positions) -> its entries "
        "acknowledged by the server (searchable), interpolated within the histogram "
        "buckets (`reid_ingest_frame_to_ack_seconds`); it includes the up to 1 s that "
        "`--max-delay 1` holds a crop for a better one. CPU: cores used by each process "
        "over the window; other load: the rest of the machine's busy time (other jobs, this "
        "script), from /proc/stat.",
        "",
        "| cameras | fps per camera (min / mean) | dropped | largest lag s | entries | "
        "p50 s | p99 s | ingester cores | server cores | RTSP server cores | other load, "
        "cores | sustained |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in sorted(runs, key=lambda r: r.cameras):
        lines.append(
            f"| {r.cameras} | {r.fps_min:.2f} / {r.fps_mean:.2f} | {r.dropped_pct:.1f}% | "
            f"{r.lag_max_s:.2f} | {r.entries} | {r.p50_s:.2f} | {r.p99_s:.2f} | "
            f"{r.ingest_cores:.2f} | {r.server_cores:.2f} | {r.rtsp_cores:.2f} | "
            f"{r.other_cores:.2f} | {'yes' if r.sustained else 'no'} |"
        )
    met = best >= 6
    other = statistics.mean(r.other_cores for r in runs) if runs else 0.0
    lines += [
        "",
        f"Sustained (every camera >= {0.95 * FPS:g} fps, <= 5% dropped, p99 <= "
        f"{TARGET_P99_S:g} s): **{best} camera(s)** at 5 fps on this machine, while its "
        f"other jobs used {other:.1f} of its {os.cpu_count()} cores on average "
        f"(target: at least 6 with p99 <= 2 s: {'met' if met else 'not met'}).",
    ]
    ok = [r for r in runs if r.sustained]
    if ok:
        top = max(ok, key=lambda r: r.cameras)
        per_camera = (top.ingest_cores + top.server_cores + top.rtsp_cores) / top.cameras
        lines += [
            "",
            f"At {top.cameras} sustained camera(s) the streams, the ingester and the server "
            f"used {per_camera:.2f} cores per camera; {os.cpu_count()} cores with nothing "
            f"else running would give about {os.cpu_count() / per_camera:.0f} cameras at "
            "that rate: an extrapolation, not a measurement (the server's cost per "
            "entry falls as adds batch across more cameras; contention for the cores and "
            "the GIL grows).",
        ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=int, default=6, help="first camera count")
    parser.add_argument("--largest", type=int, default=12, help="most cameras tried")
    parser.add_argument("--max-runs", type=int, default=4, help="live runs at most")
    parser.add_argument("--warmup", type=float, default=8.0, help="seconds before the window")
    parser.add_argument("--window", type=float, default=20.0, help="seconds measured per run")
    parser.add_argument("--model", metavar="EXPORT_DIR", help="serve this export (else: built)")
    parser.add_argument("--work", help="folder for the export, the H.264 copy and logs")
    parser.add_argument("--note", default="", help="a sentence for the report (e.g. other jobs)")
    parser.add_argument("--quick", action="store_true", help="1 and 2 cameras, 5 s; no report")
    parser.add_argument("--out", default=str(REPO / "docs" / "BENCHMARKS.md"))
    args = parser.parse_args(argv)
    given = list(argv if argv is not None else sys.argv[1:])
    args.argv = []  # the options that change what is measured (not caches, notes, paths)
    for option, value in zip(given, [*given[1:], None], strict=True):
        if option.startswith("--") and option not in ("--work", "--model", "--note", "--out"):
            args.argv += [option] + ([value] if value and not value.startswith("--") else [])
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from rtsp_stream import RtspServer, h264_copy, missing_rtsp

    from gallery.ingest.sample_video import fetch_vtest

    reason = missing_rtsp()
    if reason:
        raise SystemExit(f"bench_ingest: {reason} (bash scripts/install_rtsp.sh)")
    started, load0 = time.monotonic(), os.getloadavg()[0]
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-ingest-"))
    work.mkdir(parents=True, exist_ok=True)
    video = fetch_vtest()
    clip = work / "vtest.mp4"
    if not clip.is_file():
        h264_copy(video, clip)
    export = Path(args.model) if args.model else work / "export"
    if not (export / "manifest.json").is_file():
        from demo_video import export_model

        export_model(export)
    print("detector ...", flush=True)
    detector = bench_detector(video)
    print(f"  {detector}", flush=True)
    largest = 2 if args.quick else args.largest
    if args.quick:
        args.warmup, args.window = 3.0, 5.0
    mounts = {f"/cam{i}": clip for i in range(largest)}
    server, url = start_server(export, work)
    runs: list[LiveRun] = []
    try:
        with RtspServer(mounts, work / "rtsp.log") as rtsp:
            urls = [rtsp.urls[f"/cam{i}"] for i in range(largest)]
            n: int | None = 1 if args.quick else min(args.start, largest)
            while n is not None and len(runs) < (2 if args.quick else args.max_runs):
                print(f"{n} camera(s) ...", flush=True)
                run = live_run(n, urls, url, server.pid, rtsp.pid, work, args.warmup,
                               args.window, len(runs) + 1)  # fmt: skip
                print(f"  {run} sustained={run.sustained}", flush=True)
                runs.append(run)
                n = (
                    2
                    if args.quick and n == 1
                    else (None if args.quick else next_count(runs, largest))
                )
    finally:
        server.terminate()
        server.wait(30)
    took = time.monotonic() - started
    body = report(detector, runs, args, (load0, os.getloadavg()[0]), took)
    (work / "bench_ingest.json").write_text(
        json.dumps({"detector": asdict(detector), "runs": [asdict(r) for r in runs],
                    "loads": [load0, os.getloadavg()[0]], "seconds": took}, indent=2)
    )  # fmt: skip
    print("\n" + body)
    if not args.quick:
        update_section(args.out, SECTION, body)
        print(f"\nwrote {SECTION!r} in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
