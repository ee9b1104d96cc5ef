"""The label-free checkpoint choice (trainer.selection): cluster quality of the train
features, the starting model as a candidate, model_selected.pt and selection.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from trainer.cli import main
from trainer.clustering import ClusteringParams
from trainer.selection import (
    PREVIOUS_LABELS,
    SELECTED_CHECKPOINT,
    SELECTION_LOG,
    cluster_quality,
    label_agreement,
)

PARAMS = ClusteringParams(eps=0.6, min_samples=4, k1=10, k2=3)


def _normalised(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _groups(spread: float, groups: int = 8, size: int = 12, dim: int = 32) -> np.ndarray:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((groups, dim))
    return _normalised(np.repeat(centres, size, axis=0) + spread * rng.standard_normal(
        (groups * size, dim)))  # fmt: skip


def test_tight_separated_groups_score_higher_than_loose_ones():
    tight, loose = cluster_quality(_groups(0.05), PARAMS), cluster_quality(_groups(0.6), PARAMS)
    assert tight.clustered == 1.0 and tight.clusters == 8
    assert tight.score > 0.8 > loose.score


def test_features_without_structure_score_near_zero():
    rng = np.random.default_rng(1)
    quality = cluster_quality(_normalised(rng.standard_normal((96, 32))), PARAMS)
    assert quality.score < 0.1


def test_outliers_count_zero_so_the_score_is_silhouette_times_the_clustered_share():
    quality = cluster_quality(_groups(0.05), PARAMS)
    assert quality.score == pytest.approx(quality.silhouette * quality.clustered)


def test_the_same_partition_under_other_cluster_numbers_agrees_fully():
    assert label_agreement(np.array([0, 0, 1, 1, 2]), np.array([5, 5, 3, 3, 0])) == 1.0


def test_each_outlier_is_a_cluster_of_its_own():
    # two outliers are not "the same cluster -1": grouping them would be a change
    assert label_agreement(np.array([0, 0, -1, -1]), np.array([0, 0, -1, -1])) == 1.0
    assert label_agreement(np.array([0, 0, -1, -1]), np.array([0, 0, 1, 1])) < 1.0


def test_unrelated_partitions_agree_about_zero():
    rng = np.random.default_rng(0)
    assert abs(label_agreement(rng.integers(0, 10, 2000), rng.integers(0, 10, 2000))) < 0.02


def test_labellings_of_different_sets_are_refused():
    with pytest.raises(ValueError, match="different sizes"):
        label_agreement(np.zeros(3), np.zeros(4))


@pytest.fixture(scope="module")
def selected_run(tmp_path_factory, tiny_synthetic: Path) -> Path:
    root = tmp_path_factory.mktemp("selection")
    config = {
        "method": {"name": "supervised"},
        "model": {"name": "resnet18", "kwargs": {"pretrained": None, "input_size": [64, 32]}},
        "data": {"num_workers": 0},
        "train": {"epochs": 3, "iters_per_epoch": 2, "batch_size": 8, "num_instances": 4,
                  "device": "cpu", "seed": 0},
        "eval": {"every": 0},
        "checkpoint": {"every": 0, "select_every": 2},
    }  # fmt: skip
    (root / "c.yaml").write_text(yaml.safe_dump(config))
    argv = ["train", "--config", str(root / "c.yaml"), "--data", f"synthetic:{tiny_synthetic}"]
    assert main([*argv, "--out", str(root / "run")]) == 0
    return root / "run"


def test_the_start_every_select_every_epochs_and_the_last_epoch_are_candidates(selected_run):
    log = json.loads((selected_run / SELECTION_LOG).read_text())
    assert log["criterion"] == "cluster_quality"
    assert [c["epoch"] for c in log["candidates"]] == [0, 2, 3]
    best = max(log["candidates"], key=lambda c: c["score"])
    assert log["selected"]["epoch"] == best["epoch"]


def test_every_candidate_after_the_first_records_its_agreement_with_the_one_before(
    selected_run,
):
    log = json.loads((selected_run / SELECTION_LOG).read_text())
    agreements = [c["agreement"] for c in log["candidates"]]
    assert agreements[0] is None
    assert all(-1.0 <= a <= 1.0 for a in agreements[1:])
    assert PREVIOUS_LABELS not in log  # the labels stay in the checkpoint state only
    # --resume restores the last candidate's pseudo-labels, so the next agreement has them
    state = torch.load(selected_run / "checkpoint_last.pt", weights_only=False)["training"]
    labels = state["selection"][PREVIOUS_LABELS]
    assert len(labels) > 0 and all(isinstance(label, int) for label in labels)


def test_the_selected_model_is_saved_with_why_it_was_chosen(selected_run):
    saved = torch.load(selected_run / SELECTED_CHECKPOINT, weights_only=False)
    log = json.loads((selected_run / SELECTION_LOG).read_text())
    assert saved["metadata"]["epoch"] == log["selected"]["epoch"]
    assert saved["metadata"]["selection"]["score"] == pytest.approx(log["selected"]["score"])
    assert "training" not in saved  # weights only
    assert "selected " in (selected_run / "train.log").read_text()


def test_the_epoch_rows_carry_the_score(selected_run):
    rows = (selected_run / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert "select_score" in header
    scores = [r.split(",")[header.index("select_score")] for r in rows[1:]]
    assert scores[0] == "" and scores[1] != "" and scores[2] != ""  # epochs 2 and 3


def test_select_last_writes_no_selection(tmp_path, tiny_synthetic: Path):
    config = {
        "method": {"name": "supervised"},
        "model": {"name": "resnet18", "kwargs": {"pretrained": None, "input_size": [64, 32]}},
        "data": {"num_workers": 0},
        "train": {"epochs": 1, "iters_per_epoch": 1, "batch_size": 8, "num_instances": 4,
                  "device": "cpu"},
        "eval": {"every": 0},
        "checkpoint": {"select": "last"},
    }  # fmt: skip
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    argv = ["train", "--config", str(tmp_path / "c.yaml"), "--data", f"synthetic:{tiny_synthetic}"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    assert not (tmp_path / "run" / SELECTED_CHECKPOINT).exists()
    assert not (tmp_path / "run" / SELECTION_LOG).exists()
