"""scripts/checkpoint_criteria.py: every criterion is scored, and each choice is read right."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from checkpoint_criteria import (  # noqa: E402
    CRITERIA,
    LOGGED_CRITERIA,
    cross_camera_share,
    knn_cross_camera,
    logged_run,
    scaled_k1,
    score_features,
    summarise,
)


def _candidate(epoch: int, score_map: float, score: float) -> dict:
    scores = dict.fromkeys(CRITERIA, score)
    return {"name": str(epoch), "epoch": epoch, "mAP": score_map, "scores": scores}


def test_every_criterion_is_scored_on_one_models_features():
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((60, 16)).astype(np.float32)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    scores = score_features(feats, np.arange(60) % 3)
    assert set(scores) == set(CRITERIA)
    assert all(np.isfinite(v) for v in scores.values())


def test_each_choice_is_scored_by_the_map_of_the_model_it_picks():
    runs = [
        {"candidates": [_candidate(0, 20.0, 0.9), _candidate(10, 30.0, 0.1)]},  # picks start
        {"candidates": [_candidate(0, 20.0, 0.1), _candidate(10, 10.0, 0.9)]},  # picks last
    ]
    lines = {line.split(" | ")[0].strip("| "): line for line in summarise(runs).splitlines()}
    assert lines["last epoch"].split(" | ")[1:] == ["20.0", "2", "1 |"]
    assert lines["start"].split(" | ")[1:] == ["20.0", "1", "2 |"]
    assert lines["oracle (labels)"].split(" | ")[1] == "25.0"
    assert lines["cluster_quality"].split(" | ")[1:] == ["15.0", "1", "1 |"]


def test_a_run_missing_a_candidates_map_is_left_out():
    runs = [{"candidates": [_candidate(0, 20.0, 0.5), {**_candidate(4, 0.0, 0.1), "mAP": None}]}]
    assert summarise(runs).startswith("0 runs")


def _logged_run_folder(root: Path) -> Path:
    """A run as the trainer leaves it: start scored before training, epochs 2 and 4 after."""
    run = root / "run"
    run.mkdir()
    (run / "config.yaml").write_text("method:\n  name: aff_scl\n")
    (run / "train.log").write_text("... before training: mAP 20.0% rank-1 30.0%\n")
    (run / "metrics.csv").write_text("epoch,loss,mAP\n1,2.0,\n2,1.5,0.25\n3,1.2,\n4,1.0,0.22\n")
    candidates = [
        {"epoch": 0, "score": 0.10, "agreement": None},
        {"epoch": 2, "score": 0.20, "agreement": 0.30},
        {"epoch": 4, "score": 0.30, "agreement": 0.90},
    ]
    selection = {"criterion": "cluster_quality", "candidates": candidates,
                 "selected": candidates[2]}  # fmt: skip
    (run / "selection.json").write_text(json.dumps(selection))
    return run


def test_a_logged_run_gives_every_scored_candidate_with_its_epochs_map(tmp_path):
    result = logged_run(_logged_run_folder(tmp_path))
    assert result["method"] == "aff_scl"
    assert [(c["epoch"], c["mAP"]) for c in result["candidates"]] == [(0, 20.0), (2, 25.0),
                                                                      (4, 22.0)]  # fmt: skip
    assert [c["name"] for c in result["candidates"]] == ["scored", "scored", "selected"]
    last = result["candidates"][2]["scores"]
    assert last == {"logged_cluster_quality": 0.30, "agreement": 0.90,
                    "quality_x_agreement": pytest.approx(0.27)}  # fmt: skip


def test_the_start_without_an_agreement_is_never_the_agreement_choice(tmp_path):
    result = logged_run(_logged_run_folder(tmp_path))
    for cand in result["candidates"][1:]:
        cand["scores"]["agreement"] = -0.5  # every trained candidate disagrees
    result["candidates"][1]["scores"]["agreement"] = -0.1
    table = summarise([result], LOGGED_CRITERIA)
    lines = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()}
    assert lines["agreement"].split(" | ")[1] == "25.0"  # epoch 2, not the unscored start
    assert lines["logged_cluster_quality"].split(" | ")[1] == "22.0"


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_the_scaled_neighbourhood_follows_the_square_root_of_the_set_size():
    assert [scaled_k1(n) for n in (10, 215, 900, 12_936)] == [6, 15, 30, 30]


def test_the_cross_camera_share_counts_only_samples_of_clusters_seen_by_two_cameras():
    labels = np.array([0, 0, 1, 1, -1])
    cameras = np.array([0, 1, 2, 2, 0])  # cluster 0 spans two cameras, cluster 1 one
    assert cross_camera_share(labels, cameras) == pytest.approx(2 / 5)
    assert cross_camera_share(np.full(4, -1), np.arange(4)) == 0.0


def test_neighbours_that_follow_the_camera_score_low_and_camera_blind_ones_near_one():
    rng = np.random.default_rng(0)
    cameras = np.repeat(np.arange(4), 20)
    by_camera = _unit(np.eye(8)[cameras] * 5 + 0.1 * rng.standard_normal((80, 8)))
    by_identity = _unit(np.eye(8)[np.tile(np.arange(20) % 8, 4)] * 5
                              + 0.1 * rng.standard_normal((80, 8)))  # fmt: skip
    assert knn_cross_camera(by_camera, cameras) < 0.1
    assert knn_cross_camera(by_identity, cameras) > 0.9
