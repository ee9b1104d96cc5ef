"""`make demo-video` (scripts/demo_video.py): how it picks its query and reads its result.

The whole demo (vtest.avi -> server -> ingest -> search) is what tests/test_ingest.py's
end-to-end tests run; here: the query is the same person as a stored track, in a frame
the gallery does not hold, and the demo stays an extra next to the two set-up commands.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from gallery.ingest.detector import Detections

REPO = Path(__file__).resolve().parents[1]


def demo_video():
    spec = importlib.util.spec_from_file_location("demo_video", REPO / "scripts" / "demo_video.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def entry(id_, track, frame, box):
    return SimpleNamespace(id=id_, track=track, extra={"frame": frame}, box=box)


def test_the_query_is_the_tallest_track_found_again_three_frames_after_its_last_crop():
    demo = demo_video()
    entries = [
        entry(1, 10, 20, (100, 100, 40, 120)),
        entry(2, 10, 40, (110, 100, 40, 120)),  # track 10: last crop at frame 40, 120 px tall
        entry(3, 20, 30, (400, 50, 60, 200)),  # track 20: one crop only (no query from it)
        entry(4, 30, 50, (300, 80, 50, 150)),
        entry(5, 30, 60, (310, 80, 50, 150)),  # track 30: tallest, last crop at frame 60
    ]
    asked = []

    def read_frame(index):
        asked.append(index)
        return np.full((400, 600, 3), index, np.uint8)

    def detect(image):
        if image[0, 0, 0] == 63:  # frame 63: the track-30 person moved 4 px, and someone else
            boxes = np.array([[500, 10, 540, 100], [314, 80, 364, 230]], np.float32)
            return Detections(boxes, np.array([0.9, 0.8], np.float32))
        return Detections.empty()

    query = demo.pick_query(entries, 795, read_frame, detect, lambda image: image.tobytes())
    assert asked == [63]  # the tallest candidate first
    assert (query.track, query.frame, query.box) == (30, 63, (314, 80, 364, 230))
    assert len(query.jpeg) == 150 * 50 * 3  # the crop of that detection


def test_a_track_not_found_again_is_skipped_and_none_is_an_answer():
    demo = demo_video()
    entries = [entry(1, 10, 20, (100, 100, 40, 120)), entry(2, 10, 40, (110, 100, 40, 120))]

    def nobody(image):
        return Detections.empty()

    assert demo.pick_query(entries, 795, lambda i: np.zeros((4, 4, 3)), nobody, bytes) is None
    assert demo.pick_query(entries, 42, lambda i: np.zeros((4, 4, 3)), nobody, bytes) is None


def test_own_track_rank_is_the_first_match_of_that_track():
    demo = demo_video()
    matches = [SimpleNamespace(track=t) for t in (7, 3, 3, 9)]
    assert demo.own_track_rank(matches, 3) == 2
    assert demo.own_track_rank(matches, 5) is None


def test_demo_video_is_a_documented_extra_beside_the_two_set_up_commands():
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^demo-video: \$\(STAMP\)\n\t\$\(PY\) scripts/demo_video\.py", makefile, re.M)
    readme = (REPO / "README.md").read_text()
    two = readme.split("## The two commands", 1)[1].split("```", 2)[1]
    assert [
        line.split("#")[0].strip() for line in two.removeprefix("bash").split("\n") if line
    ] == [
        "make demo",
        "make test",
    ]
    assert "make demo-video" in readme and "cameras.yaml" in readme
