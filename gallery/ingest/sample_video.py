"""OpenCV's sample pedestrian clip ``vtest.avi`` (768x576, 10 fps, 795 frames), fetched
from Debian's ``opencv-doc`` package on first use and verified by SHA-256.

The clip is never committed (nor crops of it): ``fetch_vtest()`` downloads the package
with ``apt-get download`` (no root needed), extracts the one file with ``dpkg-deb`` and
caches it in ``$REID_TEST_DATA`` (default ``~/.cache/reid/test-data``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

VTEST_SHA256 = "45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf"
VTEST_IN_DEB = "./usr/share/doc/opencv-doc/examples/data/vtest.avi"


class SampleVideoError(RuntimeError):
    """The clip is not cached and cannot be fetched here (the message says why)."""


def cache_dir() -> Path:
    if os.environ.get("REID_TEST_DATA"):
        return Path(os.environ["REID_TEST_DATA"])
    return Path.home() / ".cache" / "reid" / "test-data"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch_vtest() -> Path:
    """The cached, verified ``vtest.avi`` (downloaded on first use)."""
    target = cache_dir() / "vtest.avi"
    if target.is_file() and _sha256(target) == VTEST_SHA256:
        return target
    if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        raise SampleVideoError("vtest.avi is not cached and apt-get / dpkg-deb are missing")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        fetched = subprocess.run(
            ["apt-get", "download", "opencv-doc"], cwd=tmp, capture_output=True, text=True
        )
        debs = list(Path(tmp).glob("opencv-doc_*.deb"))
        if fetched.returncode != 0 or not debs:
            raise SampleVideoError(f"cannot download opencv-doc: {fetched.stderr[-300:]}")
        tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(debs[0])], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", tmp, VTEST_IN_DEB], stdin=tar.stdout, check=True)
        tar.wait()
        extracted = Path(tmp) / VTEST_IN_DEB
        if _sha256(extracted) != VTEST_SHA256:
            raise SampleVideoError(f"vtest.avi from {debs[0].name} has an unexpected SHA-256")
        shutil.move(str(extracted), target)
    return target
