"""A real RTSP server on 127.0.0.1: GStreamer's gst-rtsp-server serving H.264 MP4 files.

Run with Debian's ``/usr/bin/python3`` (its ``python3-gi`` bindings; not the project's
venv), installed by ``scripts/install_rtsp.sh``::

    /usr/bin/python3 tests/rtsp_server.py --port 0 /cam1=clip.mp4 [/cam2=other.mp4 ...]

Prints ``serving rtsp://127.0.0.1:PORT/cam1`` per mount once it listens, then serves until
SIGTERM / SIGINT. Each client gets its own pipeline from the file's start, paced in real
time (the payloader's sink syncs to the clock), as a camera delivers frames. Port 0
picks a free port; a restart on the same port serves the same URLs again.
"""

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def mount(value: str) -> tuple[str, str]:
    path, sep, file = value.partition("=")
    if not sep or not path.startswith("/") or not file:
        raise argparse.ArgumentTypeError(f"expected /PATH=FILE.mp4, got {value!r}")
    return path, file


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("mounts", nargs="+", type=mount, metavar="/PATH=FILE.mp4")
    args = parser.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    points = server.get_mount_points()
    for path, file in args.mounts:
        factory = GstRtspServer.RTSPMediaFactory()
        location = file.replace("\\", "\\\\").replace('"', '\\"')
        factory.set_launch(
            f'( filesrc location="{location}" ! qtdemux ! h264parse '
            "! rtph264pay name=pay0 pt=96 config-interval=1 )"
        )
        points.add_factory(path, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on {args.host}:{args.port}", file=sys.stderr)
        return 1
    port = server.get_bound_port()
    for path, _ in args.mounts:
        print(f"serving rtsp://{args.host}:{port}{path}", flush=True)

    loop = GLib.MainLoop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signum, lambda *_: loop.quit() or False)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
