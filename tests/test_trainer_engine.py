"""The training loop end to end on a tiny synthetic dataset (CPU, resnet18 at 64x32).

open_clip-style: ``trainer.cli.main(argv)`` runs whole trainings in-process; the
loop's robustness rules are exercised with the test-only ``FakeMemory`` method.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from trainer_fakes import FakeMemory

from reid.checkpoint import CheckpointError, load_encoder, read_checkpoint
from reid.data import load_dataset
from trainer.cli import main
from trainer.config import load_config
from trainer.distributed import DistInfo
from trainer.engine import (
    NoLabelsWarning,
    SmallBatchWarning,
    TrainerError,
    build_trainer,
    resolve_device,
)
from trainer.methods import METHODS

TINY = {
    "model": {"name": "resnet18", "kwargs": {"pretrained": None, "input_size": [64, 32]}},
    "data": {"num_workers": 0},
    "train": {
        "epochs": 2,
        "iters_per_epoch": 2,
        "batch_size": 8,
        "num_instances": 4,
        "device": "cpu",
        "seed": 0,
    },
    "eval": {"every": 1, "batch_size": 64},
    "checkpoint": {"every": 1, "keep_last": 1},
}


def write_config(path: Path, method: dict, **sections: dict) -> Path:
    raw = {**TINY, "method": method}
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


@pytest.fixture
def fake_methods(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(METHODS, FakeMemory.name, FakeMemory)


@pytest.fixture(scope="module")
def supervised_run(tmp_path_factory: pytest.TempPathFactory, tiny_synthetic: Path) -> Path:
    """A finished 2-epoch supervised run."""
    root = tmp_path_factory.mktemp("supervised")
    config = write_config(root / "sup.yaml", {"name": "supervised"})
    out = root / "run"
    argv = ["train", "--config", str(config), "--data", f"synthetic:{tiny_synthetic}"]
    assert main([*argv, "--out", str(out)]) == 0
    return out


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------- a whole run


def test_training_run_writes_checkpoints_logs_and_config(supervised_run: Path) -> None:
    names = {p.name for p in supervised_run.iterdir()}
    assert {"checkpoint_last.pt", "model_best.pt", "config.yaml", "metrics.csv"} <= names
    assert {"steps.csv", "train.log"} <= names
    assert "checkpoint_epoch2.pt" in names and "checkpoint_epoch1.pt" not in names  # keep_last 1
    rows = read_csv(supervised_run / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for key in ("loss", "ce", "triplet", "lr", "img_s", "mAP", "rank1", "num_classes"):
        assert rows[-1][key] != "", key
    assert len(read_csv(supervised_run / "steps.csv")) == 4
    saved = yaml.safe_load((supervised_run / "config.yaml").read_text())
    assert saved["method"]["name"] == "supervised" and saved["train"]["epochs"] == 2
    assert saved["data"]["spec"].startswith("synthetic:")


def test_a_run_scores_its_start_and_compares_its_end_with_it(supervised_run: Path) -> None:
    log = (supervised_run / "train.log").read_text()
    assert "before training: mAP" in log
    assert re.search(r"final mAP [\d.]+% vs [\d.]+% before training \([+-][\d.]+ points\)", log)
    saved = torch.load(supervised_run / "checkpoint_last.pt", weights_only=False)
    assert 0 <= saved["training"]["start_metrics"]["mAP"] <= 1


def test_ending_below_the_start_is_a_warning(
    tmp_path: Path, tiny_synthetic: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainer.hooks import EvalHook

    scores = iter([0.5, 0.45, 0.4])  # before training, epoch 1, epoch 2
    monkeypatch.setattr(EvalHook, "evaluate", lambda self: {"mAP": next(scores), "rank1": 0.5})
    config = write_config(tmp_path / "sup.yaml", {"name": "supervised"})
    argv = ["train", "--config", str(config), "--data", f"synthetic:{tiny_synthetic}"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    log = (tmp_path / "run" / "train.log").read_text()
    assert "final mAP 40.00% vs 50.00% before training (-10.00 points)" in log
    assert "training ended BELOW the model it started from" in log


def test_checkpoint_metadata_rebuilds_the_encoder(supervised_run: Path) -> None:
    ckpt = read_checkpoint(supervised_run / "checkpoint_last.pt")
    meta = ckpt["metadata"]
    assert meta["method"] == "supervised" and meta["epoch"] == 2
    assert meta["build_spec"] == {
        "name": "resnet18",
        "kwargs": {"pretrained": None, "input_size": [64, 32]},
    }
    assert meta["input_size"] == [64, 32] and meta["embedding_dim"] == 512
    assert meta["preprocess"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert set(ckpt["training"]) >= {"method", "optimizer", "rng", "global_step", "epoch"}
    assert "classifier.weight" in ckpt["training"]["method"]
    encoder, meta2 = load_encoder(supervised_run / "model_best.pt")
    assert not encoder.training and meta2["metrics"]["mAP"] >= 0
    out = encoder(torch.zeros(2, 3, 64, 32))
    assert out.shape == (2, 512)
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)


def test_eval_cli_prints_json_matching_the_training_evaluation(
    supervised_run: Path, tiny_synthetic: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = supervised_run / "checkpoint_last.pt"
    argv = ["eval", "--checkpoint", str(ckpt), "--data", f"synthetic:{tiny_synthetic}"]
    capsys.readouterr()
    assert main([*argv, "--json", "--device", "cpu", "--num-workers", "0"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert {"mAP", "mINP", "rank1", "rank5", "rank10"} <= set(scores)
    assert all(0.0 <= scores[k] <= 1.0 for k in ("mAP", "mINP", "rank1"))
    last = read_csv(supervised_run / "metrics.csv")[-1]
    assert scores["mAP"] == pytest.approx(float(last["mAP"]), abs=1e-5)
    assert main([*argv, "--num-workers", "0"]) == 0
    assert "mAP" in capsys.readouterr().out


def test_eval_of_a_checkpoint_warns_of_no_random_init_and_says_what_it_does(
    supervised_run: Path,
    tiny_synthetic: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    ckpt = supervised_run / "model_best.pt"
    argv = ["eval", "--checkpoint", str(ckpt), "--data", f"synthetic:{tiny_synthetic}"]
    capsys.readouterr()
    weights_log = "reid.models.backbones.weights"  # python -m export quiets it in-process
    with caplog.at_level(logging.INFO, logger=weights_log):
        assert main([*argv, "--json", "--device", "cpu", "--num-workers", "0"]) == 0
    assert "random init" not in caplog.text  # the checkpoint's weights replace it
    err = capsys.readouterr().err
    assert "embedding" in err and "gallery images" in err and "evaluated in" in err
    from reid.models import build_model

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=weights_log):
        build_model("resnet18", pretrained=None, input_size=(64, 32))
    assert "starting from random init" in caplog.text  # a model that really starts so


def test_prepare_epoch_logs_the_clustering_time(
    tiny_synthetic: Path, tmp_path: Path, fake_methods: None, caplog: pytest.LogCaptureFixture
) -> None:
    from trainer.logging_utils import get_logger

    config = load_config(
        write_config(tmp_path / "c.yaml", {"name": FakeMemory.name}), ["train.epochs=1"]
    )
    dataset = load_dataset(f"synthetic:{tiny_synthetic}")
    trainer = build_trainer(config, dataset, None, DistInfo(), hooks=[])
    logger = get_logger()
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger=logger.name):
            trainer.prepare_epoch(0)
    finally:
        logger.removeHandler(caplog.handler)
    line = next(r.getMessage() for r in caplog.records if "pseudo-labels" in r.getMessage())
    assert line.startswith("epoch 1: features of ") and " s" in line and "(clustering) in" in line


def test_eval_of_an_untrained_model_gives_the_direct_transfer_baseline(
    tiny_synthetic: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``eval --model NAME`` scores the encoder before any training (same JSON keys)."""
    kwargs = json.dumps({"pretrained": None, "input_size": [64, 32]})
    argv = ["eval", "--model", "resnet18", "--model-kwargs", kwargs]
    argv += ["--data", f"synthetic:{tiny_synthetic}", "--json", "--device", "cpu"]
    capsys.readouterr()
    assert main([*argv, "--num-workers", "0"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert 0.0 <= scores["mAP"] <= 1.0 and scores["num_valid_queries"] > 0
    bad = ["eval", "--model", "no_such_net", "--data", f"synthetic:{tiny_synthetic}"]
    assert main(bad) == 2
    assert "no_such_net" in capsys.readouterr().err


# ----------------------------------------------------------------------------- resume


def train_and_resume(
    tmp_path: Path, data: Path, method: dict
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], Path, Path]:
    config = write_config(tmp_path / "c.yaml", method, eval={"every": 0})
    base = ["train", "--config", str(config), "--data", f"synthetic:{data}"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main([*base, "--out", str(straight), "epochs=2"]) == 0
    assert main([*base, "--out", str(split), "epochs=1"]) == 0
    assert main(["train", "--out", str(split), "--resume", "epochs=2"]) == 0
    a = read_checkpoint(straight / "checkpoint_last.pt")
    b = read_checkpoint(split / "checkpoint_last.pt")
    return a, b, straight, split


TINY_IICS = {"name": "iics", "intra_clusters": 4, "inter_clusters": 8, "k1": 5, "k2": 2}


@pytest.mark.parametrize("method", ["supervised", "fake_memory", "iics"])
def test_resume_continues_exactly(
    method: str, fake_methods: None, tmp_path: Path, tiny_synthetic: Path
) -> None:
    spec = TINY_IICS if method == "iics" else {"name": method}  # iics: intra, then inter
    a, b, straight, split = train_and_resume(tmp_path, tiny_synthetic, spec)
    assert a["metadata"]["epoch"] == b["metadata"]["epoch"] == 2
    for key, value in a["encoder"].items():
        assert torch.allclose(value.float(), b["encoder"][key].float(), atol=1e-6), key
    for key, value in a["training"]["method"].items():
        assert torch.allclose(value.float(), b["training"]["method"][key].float(), atol=1e-6), key
    steps_a = read_csv(straight / "steps.csv")
    steps_b = read_csv(split / "steps.csv")
    assert len(steps_a) == len(steps_b) == 4
    for ra, rb in zip(steps_a, steps_b, strict=True):
        assert float(ra["loss"]) == pytest.approx(float(rb["loss"]), rel=1e-5)
    assert len(read_csv(split / "metrics.csv")) == 2


def test_resume_with_another_method_is_refused(
    supervised_run: Path, fake_methods: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "fake.yaml", {"name": "fake_memory"})
    rc = main(["train", "--config", str(config), "--out", str(supervised_run), "--resume"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "supervised" in err and "fake_memory" in err and "Traceback" not in err


def test_resume_needs_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--out", str(tmp_path / "nothing"), "--resume"]) == 2
    assert "no run to continue" in capsys.readouterr().err


def test_existing_run_is_not_overwritten(
    supervised_run: Path, tiny_synthetic: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = supervised_run / "config.yaml"
    argv = ["train", "--config", str(config), "--data", f"synthetic:{tiny_synthetic}"]
    assert main([*argv, "--out", str(supervised_run)]) == 2
    assert "--resume" in capsys.readouterr().err


# ----------------------------------------------------------------------------- bad input


def test_corrupted_checkpoint_is_reported(
    supervised_run: Path, tmp_path: Path, tiny_synthetic: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes((supervised_run / "model_best.pt").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"cannot read .*is this a reid checkpoint"):
        read_checkpoint(bad)
    rc = main(["eval", "--checkpoint", str(bad), "--data", f"synthetic:{tiny_synthetic}"])
    assert rc == 2 and "is this a reid checkpoint" in capsys.readouterr().err
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a reid checkpoint"):
        read_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a file"):
        read_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="no such"):
        read_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"this is a README, not weights\n", "this is a text file"),
        (None, "truncated or corrupt"),
        (b"", "the file is empty"),
        (bytes(range(256)), "not a file written by torch.save"),
    ],
    ids=["text", "truncated", "empty", "binary"],
)
def test_an_unreadable_checkpoint_says_what_is_wrong_with_the_file(
    supervised_run: Path,
    tmp_path: Path,
    tiny_synthetic: Path,
    capsys: pytest.CaptureFixture[str],
    content: bytes | None,
    message: str,
) -> None:
    bad = tmp_path / "bad.pt"
    whole = (supervised_run / "model_best.pt").read_bytes()
    bad.write_bytes(whole[: len(whole) // 2] if content is None else content)
    with pytest.raises(CheckpointError, match=message) as error:
        read_checkpoint(bad)
    text = str(error.value)
    assert text.startswith(f"cannot read {bad}: ")
    assert "KeyError" not in text and "Errno" not in text and "weights_only" not in text
    rc = main(["eval", "--checkpoint", str(bad), "--data", f"synthetic:{tiny_synthetic}"])
    assert rc == 2 and message in capsys.readouterr().err


def test_missing_dataset_and_unknown_keys_exit_2(
    tmp_path: Path, tiny_synthetic: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "sup.yaml", {"name": "supervised"})
    base = ["train", "--config", str(config), "--out", str(tmp_path / "run")]
    assert main([*base, "--data", f"synthetic:{tmp_path / 'absent'}"]) == 2
    assert "absent" in capsys.readouterr().err
    assert main([*base, "--data", f"synthetic:{tiny_synthetic}", "train.bogus=1"]) == 2
    err = capsys.readouterr().err
    assert "train.bogus" in err and "iters_per_epoch" in err
    assert main([*base]) == 2
    assert "--data" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoint_last.pt").exists()


def test_unlabeled_dataset_is_refused_by_supervised(
    tmp_path: Path, tiny_synthetic: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = sorted((tiny_synthetic / "bounding_box_train").glob("*.jpg"))[:20]
    lines = ["path,pid,camid"] + [f"{p},,{i % 2}" for i, p in enumerate(images)]
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    config = write_config(tmp_path / "sup.yaml", {"name": "supervised"})
    argv = ["train", "--config", str(config), "--data", f"folder:{tmp_path / 'manifest.csv'}"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "supervised" in err and "unlabeled" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- robustness


def build(tmp_path: Path, data: Path, method: dict, **train: object):
    config = write_config(tmp_path / "c.yaml", method, train=train, eval={"every": 0})
    cfg = load_config(config)
    cfg.data.spec = f"synthetic:{data}"
    return build_trainer(cfg, load_dataset(cfg.data.spec), tmp_path / "run")


def test_resolve_device_is_the_librarys_plus_the_ddp_local_rank(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cpu", DistInfo()) == torch.device("cpu")
    assert resolve_device("auto", DistInfo(rank=1, world_size=2, local_rank=1)).type == "cpu"
    with pytest.raises(TrainerError, match="no CUDA GPU"):
        resolve_device("cuda:1", DistInfo())
    with pytest.raises(TrainerError, match="auto, cpu or cuda"):
        resolve_device("tpu", DistInfo())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto", DistInfo()) == torch.device("cuda")
    assert resolve_device("cuda:1", DistInfo()) == torch.device("cuda", 1)
    assert resolve_device("cuda", DistInfo(rank=1, world_size=2, local_rank=1)) == torch.device(
        "cuda", 1
    )


def test_all_outlier_epochs_are_skipped_without_previous_labels(
    fake_methods: None, tmp_path: Path, tiny_synthetic: Path
) -> None:
    (tmp_path / "run").mkdir()
    trainer = build(tmp_path, tiny_synthetic, {"name": "fake_memory", "mode": "outliers"})
    with pytest.warns(NoLabelsWarning, match="skipping"):
        state = trainer.train()
    assert state.epoch == 2 and state.global_step == 0
    assert (tmp_path / "run" / "checkpoint_last.pt").is_file()


def test_all_outlier_epoch_keeps_previous_labels_and_memory(
    fake_methods: None, tmp_path: Path, tiny_synthetic: Path
) -> None:
    (tmp_path / "run").mkdir()
    trainer = build(tmp_path, tiny_synthetic, {"name": "fake_memory", "mode": "first_only"})
    trainer.run_epoch(0)
    memory = trainer.method.memory.clone()
    labels = trainer.state.last_labels.copy()
    assert memory.shape[0] == 8
    with pytest.warns(NoLabelsWarning, match="keeping the previous"):
        trainer.run_epoch(1)  # prepare_epoch emptied the memory; the loop restores it
    assert trainer.state.global_step == 4
    assert np.array_equal(trainer.state.last_labels, labels)
    assert trainer.method.memory.shape == memory.shape


def test_parameters_a_method_re_initialises_lose_their_optimiser_state(
    tmp_path: Path, tiny_synthetic: Path
) -> None:
    """IICS starts a fresh classifier each stage: its Adam moments must not carry over."""
    (tmp_path / "run").mkdir()
    trainer = build(tmp_path, tiny_synthetic, TINY_IICS, epochs=4)
    method = trainer.method
    trainer.run_epoch(0)  # intra stage
    trainer.run_epoch(1)  # inter stage
    state = trainer.optimizer.state
    assert method.intra_weight in state and method.inter_weight in state
    trainer.prepare_epoch(2)  # the next round's intra stage: a fresh intra classifier
    assert method.intra_weight not in state and method.inter_weight in state


def test_too_few_clusters_lower_p(fake_methods: None, tmp_path: Path, tiny_synthetic: Path) -> None:
    (tmp_path / "run").mkdir()
    trainer = build(
        tmp_path, tiny_synthetic, {"name": "fake_memory", "mode": "two"}, batch_size=16, epochs=1
    )
    with pytest.warns(SmallBatchWarning, match="using P = 2"):
        trainer.train()
    assert trainer.state.global_step == 2
    assert trainer.epoch_record["batch_size"] == 8


def test_one_pass_per_epoch_counts_the_whole_train_set_not_the_labelled_part(
    fake_methods: None, tmp_path: Path, tiny_synthetic: Path
) -> None:
    """``iters_per_epoch: null``: ceil(N / batch) steps however few images are clustered."""
    (tmp_path / "run").mkdir()
    trainer = build(
        tmp_path, tiny_synthetic, {"name": "fake_memory", "mode": "two"},
        batch_size=8, epochs=1, iters_per_epoch=None,
    )  # fmt: skip
    trainer.train()  # two clusters of ~15 images: a pass over them alone would be 4 steps
    assert trainer.state.global_step == -(-len(trainer.records) // 8)
