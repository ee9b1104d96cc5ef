"""``python -m gallery dataset``: a real video cut into a Market-1501-layout re-ID set
(tracks as identities, strips of the frame as pseudo-cameras), on OpenCV's vtest.avi."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from video_data import vtest_path, write_clip

from gallery.ingest.dataset import query_cameras
from reid.data import load_dataset

REPO = Path(__file__).resolve().parents[1]
CLIP_FRAMES = 300


def dataset(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gallery", "dataset", *args],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.fixture(scope="module")
def cut(tmp_path_factory) -> tuple[Path, dict]:
    pytest.importorskip("trackers")
    from gallery.ingest.detector import DetectorError, SSDLitePedestrianDetector

    try:
        SSDLitePedestrianDetector()
    except DetectorError as exc:
        pytest.skip(str(exc))
    root = tmp_path_factory.mktemp("vtest_set")
    clip = write_clip(vtest_path(), root / "clip.avi", 0, CLIP_FRAMES)
    run = dataset(str(clip), "--out", str(root / "set"), "--cameras", "3")
    assert run.returncode == 0, run.stderr[-3000:]
    return root / "set", json.loads(run.stdout)


pytestmark = pytest.mark.slow


def test_the_set_loads_as_market1501_with_the_counts_it_printed(cut):
    root, printed = cut
    data = load_dataset(f"market1501:{root}")
    assert len(data.train) == printed["images"]["train"] > 0
    assert len(data.query) == printed["images"]["query"] > 0
    assert len(data.gallery) == printed["images"]["gallery"] > 0
    assert {r.camid for r in data.train + data.query + data.gallery} <= {0, 1, 2}


def test_train_and_test_identities_are_disjoint(cut):
    data = load_dataset(f"market1501:{cut[0]}")
    train = {r.pid for r in data.train}
    test = {r.pid for r in data.query + data.gallery}
    assert train and test and not train & test


def test_every_query_has_a_match_in_another_pseudo_camera(cut):
    data = load_dataset(f"market1501:{cut[0]}")
    cameras = defaultdict(set)
    for record in data.gallery:
        cameras[record.pid].add(record.camid)
    for query in data.query:
        assert cameras[query.pid] - {query.camid}, query.path.name


def test_meta_records_the_source_settings_and_label_noise(cut):
    meta = json.loads((cut[0] / "meta.json").read_text())
    assert meta["settings"]["cameras"] == 3 and meta["frames"] == CLIP_FRAMES
    assert meta["detector"] and meta["tracker"]
    noise = meta["label_noise"]
    assert 0 <= noise["tracks_starting_inside"] <= noise["tracks_kept"] <= meta["tracks"]
    assert len(meta["files_sha256"]) == 64


def test_a_folder_that_is_not_empty_is_refused(cut):
    run = dataset(str(cut[0] / "query"), "--out", str(cut[0]))
    assert run.returncode == 2 and "not empty" in run.stderr


def test_one_pseudo_camera_is_refused_before_any_work(tmp_path):
    run = dataset("missing.avi", "--out", str(tmp_path / "x"), "--cameras", "1")
    assert run.returncode == 2
    assert "at least 2 pseudo-cameras" in run.stderr


def test_queries_come_only_from_cameras_that_keep_a_gallery_crop():
    one, two = ["crop"], ["crop", "crop"]
    assert query_cameras({0: two, 1: one}) == {0}
    assert query_cameras({0: two}) == set()  # seen in one camera: no cross-camera match
    assert query_cameras({0: two, 1: two, 2: one}) == {0, 1}
