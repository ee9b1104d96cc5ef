#!/usr/bin/env bash
# The RTSP stream of the live-ingestion test (tests/test_ingest_rtsp.py) and of
# bench/bench_ingest.py: Debian's GStreamer RTSP server with its Python bindings (run by
# tests/rtsp_server.py under Debian's /usr/bin/python3, not the project's venv) and
# ffmpeg, which makes the H.264 copy of vtest.avi it serves. Run by .ci/run before
# `make test`; does nothing when everything is already there.
#
#   bash scripts/install_rtsp.sh        (as root, or with sudo available)
#
# CI fails when this fails: the RTSP test does not skip there (CI=true).
set -euo pipefail

PACKAGES=(
    ffmpeg python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp
    gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-libav
)
ready() {
    command -v ffmpeg >/dev/null && [[ -x /usr/bin/python3 ]] && /usr/bin/python3 -c '
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer
Gst.init(None)
missing = [e for e in ("qtdemux", "h264parse", "rtph264pay") if not Gst.ElementFactory.find(e)]
raise SystemExit(1 if missing else 0)
' 2>/dev/null
}

if ready; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "install_rtsp.sh: no apt-get here; install ${PACKAGES[*]} yourself" >&2
    exit 1
fi
sudo=()
if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
if ! ready; then
    echo "install_rtsp.sh: installed ${PACKAGES[*]}, but GStreamer's RTSP server still" \
        "cannot be loaded by /usr/bin/python3" >&2
    exit 1
fi
ffmpeg -hide_banner -version | head -n 1
/usr/bin/python3 -c 'import gi; gi.require_version("Gst", "1.0"); from gi.repository import Gst; Gst.init(None); print(Gst.version_string())'
