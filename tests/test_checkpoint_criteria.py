"""scripts/checkpoint_criteria.py: every criterion is scored, and each choice is read right."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from checkpoint_criteria import summarise  # noqa: E402

from trainer.selection import CRITERIA, score_features  # noqa: E402


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
