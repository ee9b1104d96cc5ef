"""Specification of the synthetic multi-camera dataset generator and the colour baseline.

Datasets here are tiny (a few identities, 3 cameras, 64x32) so the file runs in seconds.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from reid.color_baseline import camera_shift_fraction, extract_features, hsv_histogram
from reid.color_baseline import main as baseline_main
from reid.data import load_dataset
from reid.data.base import label_arrays
from reid.data.io import read_image_rgb
from reid.data.synthetic import GENERATOR_NAME, GeneratorParams, generate
from reid.data.synthetic.generate import main as generator_main
from reid.data.synthetic.identity import identity_for, sample_identity
from reid.data.synthetic.render import VIEWS, draw_person

MARKET_NAME = re.compile(
    r"(?P<pid>-1|\d{4})_c(?P<cam>[1-9])s(?P<seq>[1-9]\d*)_(?P<frame>\d{6})_\d{2}\.jpg"
)
SPLIT_DIRS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
TINY = GeneratorParams(
    ids_train=5, ids_test=6, cameras=3, seed=7, height=64, width=32, images_per_id=6
)


def _files(root: Path, split: str) -> list[Path]:
    return sorted((root / SPLIT_DIRS[split]).iterdir())


def _parsed(root: Path, split: str) -> list[dict[str, int]]:
    out = []
    for path in _files(root, split):
        m = MARKET_NAME.fullmatch(path.name)
        assert m is not None, f"{path.name} does not follow the Market-1501 naming"
        out.append({k: int(v) for k, v in m.groupdict().items()})
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "tiny"
    generate(root, TINY, workers=1)
    return root


# ----------------------------------------------------------------------------- layout


def test_writes_market_layout_and_meta(tiny: Path) -> None:
    """OUT holds the three Market-1501 folders of JPEGs and a meta.json naming the generator."""
    for folder in SPLIT_DIRS.values():
        files = list((tiny / folder).iterdir())
        assert files and all(f.suffix == ".jpg" for f in files)
    meta = json.loads((tiny / "meta.json").read_text())
    assert meta["generator"] == GENERATOR_NAME == "reid.data.synthetic"
    assert meta["version"] == 1
    params = meta["params"]
    assert params["seed"] == 7 and params["cameras"] == 3 and params["size"] == "64x32"
    assert params["difficulty"] == TINY.difficulty


def test_file_names_parse_with_the_market_convention(tiny: Path) -> None:
    """Every name is PPPP_cCsS_FFFFFF_BB.jpg with a 1-based camera within --cameras."""
    for split in SPLIT_DIRS:
        for rec in _parsed(tiny, split):
            assert 1 <= rec["cam"] <= TINY.cameras
            assert rec["seq"] >= 1


def test_meta_counts_match_the_files(tiny: Path) -> None:
    """The counts in meta.json are exactly what is on disk."""
    counts = json.loads((tiny / "meta.json").read_text())["counts"]
    for split in SPLIT_DIRS:
        recs = _parsed(tiny, split)
        assert counts[split]["images"] == len(recs)
        assert counts[split]["ids"] == len({r["pid"] for r in recs if r["pid"] > 0})
    gallery = _parsed(tiny, "gallery")
    assert counts["gallery"]["distractors"] == sum(r["pid"] == 0 for r in gallery)
    assert counts["gallery"]["junk"] == sum(r["pid"] == -1 for r in gallery)


def test_the_project_loader_reads_it(tiny: Path) -> None:
    """``load_dataset("synthetic:OUT")`` recognises the output and sees every image."""
    dataset = load_dataset(f"synthetic:{tiny}")
    for split in SPLIT_DIRS:
        assert len(dataset.split(split)) == len(_files(tiny, split))


def test_images_have_the_requested_size(tiny: Path) -> None:
    """Every image decodes to HxW = --size, in colour."""
    for split in SPLIT_DIRS:
        for path in _files(tiny, split):
            assert read_image_rgb(path).shape == (64, 32, 3)


# ----------------------------------------------------------------------------- splits


def test_train_and_test_identities_are_disjoint_ranges(tiny: Path) -> None:
    """Train pids are 1..ids_train, test pids the next ids_test labels; 0 is never a person."""
    train = {r["pid"] for r in _parsed(tiny, "train")}
    test = {r["pid"] for s in ("query", "gallery") for r in _parsed(tiny, s) if r["pid"] > 0}
    assert train == set(range(1, TINY.ids_train + 1))
    assert test == set(range(TINY.ids_train + 1, TINY.ids_train + TINY.ids_test + 1))


def test_every_query_has_a_gallery_match_in_another_camera(tiny: Path) -> None:
    """Like Market: each query identity is findable across cameras."""
    gallery_cams = defaultdict(set)
    for r in _parsed(tiny, "gallery"):
        gallery_cams[r["pid"]].add(r["cam"])
    queries = _parsed(tiny, "query")
    assert {q["pid"] for q in queries} == set(range(6, 12))
    for q in queries:
        assert gallery_cams[q["pid"]] - {q["cam"]}, f"query {q} has no cross-camera match"


def test_queries_are_one_image_per_identity_and_camera(tiny: Path) -> None:
    """A test identity has at most one query per camera it appears in."""
    seen = [(q["pid"], q["cam"]) for q in _parsed(tiny, "query")]
    assert len(seen) == len(set(seen))


def test_gallery_contains_distractors_and_junk(tiny: Path) -> None:
    """Market-style pid 0000 distractors and -1 junk boxes are in bounding_box_test only."""
    gallery_pids = [r["pid"] for r in _parsed(tiny, "gallery")]
    assert 0 in gallery_pids and -1 in gallery_pids
    for split in ("train", "query"):
        assert all(r["pid"] > 0 for r in _parsed(tiny, split))
    assert any(p.name.startswith("-1_c") for p in _files(tiny, "gallery"))


def test_a_person_is_never_in_two_cameras_at_once(tiny: Path) -> None:
    """Frame numbers are one clock: an identity's per-camera time spans do not overlap."""
    spans: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for split in SPLIT_DIRS:
        for r in _parsed(tiny, split):
            if r["pid"] > 0:
                spans[r["pid"]][r["cam"]].append(r["frame"])
    for pid, cams in spans.items():
        intervals = sorted((min(f), max(f)) for f in cams.values())
        for (_, end), (start, _) in itertools.pairwise(intervals):
            assert end < start, f"identity {pid} is in two cameras at the same time"


# ----------------------------------------------------------------------------- determinism


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.jpg"))}


def test_same_seed_gives_byte_identical_files(tiny: Path, tmp_path: Path) -> None:
    """Regenerating with the same parameters, even with 2 workers, reproduces every byte."""
    generate(tmp_path / "again", TINY, workers=2)
    assert _snapshot(tmp_path / "again") == _snapshot(tiny)
    meta = json.loads((tmp_path / "again" / "meta.json").read_text())
    assert meta == json.loads((tiny / "meta.json").read_text())


def test_different_seed_gives_different_data(tiny: Path, tmp_path: Path) -> None:
    """Another seed changes the file names and the pixels."""
    generate(tmp_path / "other", dataclasses.replace(TINY, seed=8), workers=1)
    a, b = _snapshot(tiny), _snapshot(tmp_path / "other")
    assert set(a) != set(b)
    shared = set(a) & set(b)
    assert all(a[k] != b[k] for k in shared)


def test_identities_are_persistent_per_seed() -> None:
    """An identity's attributes depend only on (seed, pid)."""
    assert identity_for(3, 17) == identity_for(3, 17)
    assert identity_for(3, 17) != identity_for(4, 17)


# ----------------------------------------------------------------------------- appearance


def test_palette_is_skewed_towards_dark_and_neutral_clothes() -> None:
    """Most tops are dark or neutral (confusable identities); vivid colours are a minority."""
    rng = np.random.default_rng(0)
    tops = np.array([sample_identity(rng).upper_color for _ in range(400)], dtype=float)
    luma = tops @ np.array([0.299, 0.587, 0.114])
    chroma = tops.max(axis=1) - tops.min(axis=1)
    assert np.mean(luma < 80) > 0.4
    assert np.mean(chroma > 120) < 0.25


def _render(view: str, **attrs: object) -> np.ndarray:
    ident = dataclasses.replace(identity_for(0, 1), **attrs)
    img = np.zeros((128, 64, 3), np.uint8)
    draw_person(img, ident, view, 0.3, 32.0, 126.0, 118.0)
    return img


def _count(img: np.ndarray, color: tuple[int, int, int]) -> int:
    return int(np.all(img == np.array(color, np.uint8), axis=2).sum())


def test_every_view_draws_a_person() -> None:
    """Each viewpoint draws a figure that fills a sizeable part of the crop."""
    for view in VIEWS:
        assert (_render(view).sum(axis=2) > 0).mean() > 0.2


def test_backpack_is_seen_mainly_from_behind() -> None:
    """A backpack covers the back; from the front only the straps show."""
    magenta = (255, 0, 255)
    back = _count(_render("back", backpack=magenta), magenta)
    front = _count(_render("front", backpack=magenta), magenta)
    assert back > 4 * max(front, 1)


def test_logo_is_only_visible_from_the_front() -> None:
    """A chest logo shows from the front, not from behind."""
    green = (0, 255, 0)
    attrs = {"upper_pattern": "logo", "pattern_color": green, "logo_shape": "square"}
    assert _count(_render("front", **attrs), green) > 10
    assert _count(_render("back", **attrs), green) == 0


def test_shoulder_bag_switches_image_side_between_front_and_back() -> None:
    """The bag hangs on the same body side, hence on opposite image sides front vs back."""
    cyan = (0, 255, 255)
    front = _render("front", bag=cyan, bag_side=1)
    back = _render("back", bag=cyan, bag_side=1)

    def mean_x(img: np.ndarray) -> float:
        return float(np.nonzero(np.all(img == np.array(cyan, np.uint8), axis=2))[1].mean())

    assert mean_x(front) > 32 > mean_x(back)


# ----------------------------------------------------------------------------- camera shift


def _same_cam_vs_cross_cam_ratio(root: Path) -> float:
    """Mean histogram distance (different people, same camera) / (same person, other camera)."""
    records = load_dataset(f"synthetic:{root}").train
    feats = extract_features(records, center_sigma=None)
    pids, cams = label_arrays(records)
    dist = 1.0 - feats @ feats.T
    same_person = pids[:, None] == pids[None, :]
    same_cam = cams[:, None] == cams[None, :]
    return float(dist[~same_person & same_cam].mean() / dist[same_person & ~same_cam].mean())


def test_camera_shift_makes_same_camera_strangers_about_as_close_as_the_same_person(
    tmp_path: Path,
) -> None:
    """At the default difficulty, colour histograms of different people in one camera are on
    average not much farther apart than those of one person across cameras; the gap closes
    (and reverses) as difficulty grows."""
    ratios = {}
    for difficulty in (0.0, 2.0, 3.0):
        params = dataclasses.replace(
            TINY, ids_train=12, ids_test=1, images_per_id=8, seed=0, difficulty=difficulty
        )
        generate(tmp_path / str(difficulty), params, workers=1)
        ratios[difficulty] = _same_cam_vs_cross_cam_ratio(tmp_path / str(difficulty))
    assert ratios[2.0] < 1.25
    assert ratios[0.0] > ratios[2.0] > ratios[3.0]


# ----------------------------------------------------------------------------- CLI


def test_cli_writes_a_dataset_and_prints_a_summary(tmp_path: Path, capsys) -> None:
    """The documented command line works and summarises what it wrote."""
    out = tmp_path / "cli"
    args = [str(out), "--ids-train", "2", "--ids-test", "2", "--cameras", "2", "--seed", "1"]
    assert generator_main([*args, "--size", "64x32", "--difficulty", "1", "--workers", "1"]) == 0
    text = capsys.readouterr().out
    assert "query" in text and "gallery" in text and "images/s" in text
    meta = json.loads((out / "meta.json").read_text())
    assert meta["params"]["ids_train"] == 2 and meta["params"]["difficulty"] == 1.0


def test_cli_refuses_a_non_empty_output_without_force(tmp_path: Path, capsys) -> None:
    """An existing non-empty OUT is an argparse error (exit 2) unless --force is given."""
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    args = [str(out), "--ids-train", "1", "--ids-test", "1", "--cameras", "2", "--size", "32x16"]
    with pytest.raises(SystemExit) as exc:
        generator_main([*args, "--workers", "1"])
    assert exc.value.code == 2
    assert "--force" in capsys.readouterr().err
    assert generator_main([*args, "--workers", "1", "--force"]) == 0
    assert (out / "notes.txt").read_text() == "keep me"  # only its own outputs are replaced
    assert (out / "meta.json").is_file()


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--size", "12x", "HxW"),
        ("--size", "8x8", "out of range"),
        ("--difficulty", "7", "between 0 and 3"),
        ("--difficulty", "hard", "must be a number"),
        ("--cameras", "0", "between 2 and 9"),
        ("--cameras", "10", "between 2 and 9"),
        ("--ids-test", "0", "--ids-test"),
        ("--seed", "-1", "--seed"),
    ],
)
def test_cli_rejects_bad_arguments_with_a_clear_message(
    tmp_path: Path, capsys, option: str, value: str, message: str
) -> None:
    """Bad values are argparse errors (exit 2) that say what is expected."""
    with pytest.raises(SystemExit) as exc:
        generator_main([str(tmp_path / "x"), option, value])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_module_entry_point_runs(tmp_path: Path) -> None:
    """``python -m reid.data.synthetic OUT ...`` is the documented entry point."""
    out = tmp_path / "m"
    cmd = [sys.executable, "-m", "reid.data.synthetic", str(out), "--ids-train", "1"]
    cmd += ["--ids-test", "1", "--cameras", "2", "--size", "32x16", "--workers", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "meta.json").read_text())["generator"] == GENERATOR_NAME


# ----------------------------------------------------------------------------- baseline


def test_hsv_histogram_is_a_unit_vector_of_the_documented_size() -> None:
    """stripes x prod(bins) dimensions, L2-normalised, deterministic."""
    img = np.random.default_rng(0).integers(0, 256, (64, 32, 3), dtype=np.uint8)
    feat = hsv_histogram(img, bins=(8, 3, 3), stripes=4)
    assert feat.shape == (4 * 8 * 3 * 3,) and feat.dtype == np.float32
    assert abs(float(np.linalg.norm(feat)) - 1.0) < 1e-5
    assert np.array_equal(feat, hsv_histogram(img, bins=(8, 3, 3), stripes=4))
    with pytest.raises(ValueError, match="RGB uint8"):
        hsv_histogram(img[:, :, 0])


def test_camera_shift_fraction_counts_closer_same_camera_strangers() -> None:
    """One anchor, one cross-camera positive, two same-camera negatives: one is closer."""
    q = np.array([[1.0, 0.0]], np.float32)
    g = np.array([[0.8, 0.6], [1.0, 0.0], [0.0, 1.0]], np.float32)
    frac = camera_shift_fraction(
        q, g, np.array([1]), np.array([1, 2, 3]), np.array([0]), np.array([1, 0, 0])
    )
    assert frac == pytest.approx(0.5)


def test_baseline_cli_prints_scores_as_json(tmp_path: Path, capsys) -> None:
    """On a nearly clean dataset the colour baseline is well above chance."""
    params = dataclasses.replace(TINY, ids_train=0, ids_test=8, difficulty=0.0, distractors=0)
    generate(tmp_path / "clean", params, workers=1)
    assert baseline_main(["--data", f"synthetic:{tmp_path / 'clean'}", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert {"mAP", "mINP", "rank1", "rank5", "rank10", "camera_shift_triplets"} <= set(scores)
    assert scores["mAP"] > 30.0  # chance is ~1 / 8 identities
