"""The labelled auxiliary ("reference") stream: what may be one, how it is sampled.

* ``trainer.reference``: labels ``0..C-1`` with the train and test identities kept
  apart; unlabelled images, an empty set, the target itself and images shared with
  the target are refused with a message saying what to do;
* ``reid.data.samplers.ShuffleSampler``: random image batches, each pass a
  permutation, DDP shares disjoint and together the single-process stream; the
  trainer's reference loader shards it by rank;
* ``python -m trainer train --reference``: the errors a user can make, exit status 2;
* ``python -m reid.data.synthetic --pid-offset``: a second set whose labels never
  collide with the first one's.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from reid.data import load_dataset
from reid.data.base import ImageRecord, ReIDDataset
from reid.data.samplers import ShuffleSampler
from reid.data.synthetic.generate import GeneratorParams, plan_dataset
from trainer.cli import main
from trainer.config import ConfigError, config_from_dict
from trainer.distributed import DistInfo
from trainer.reference import ReferenceSetError, build_reference_set, find_overlap

TINY_MAR = {
    "model": {
        "name": "fusion_resnet18",
        "kwargs": {"pretrained": None, "input_size": [64, 32], "neck": "none"},
    },
    "method": {"name": "mar"},
    "reference": {"batch_size": 4},
    "data": {"num_workers": 0},
    "train": {
        "epochs": 1,
        "iters_per_epoch": 1,
        "batch_size": 4,
        "num_instances": 1,
        "sampler": "random",
        "device": "cpu",
    },
    "eval": {"every": 0},
    "checkpoint": {"every": 0},
}


def _records(root: Path, pids: list[int | None], cams: list[int] | None = None) -> list:
    cams = cams or [0] * len(pids)
    return [
        ImageRecord(root / f"{i:04d}.jpg", pid, cam)
        for i, (pid, cam) in enumerate(zip(pids, cams, strict=True))
    ]


# ----------------------------------------------------------------------------- the set


def test_labels_run_over_the_identities_with_train_and_test_numbered_apart(tmp_path) -> None:
    data = ReIDDataset("ref", tmp_path)
    data.train = _records(tmp_path / "a", [7, 3, 7, 0])  # 0: a distractor, left out
    data.query = _records(tmp_path / "b", [3])  # test pid 3 is not train pid 3 (MSMT17)
    data.gallery = _records(tmp_path / "c", [3, -1])  # -1: junk, left out
    ref = build_reference_set(data, ["train", "query", "gallery"])
    assert ref.num_classes == 3 and len(ref.records) == 5
    np.testing.assert_array_equal(ref.labels, [1, 0, 1, 2, 2])  # (train 3, train 7, test 3)
    assert ref.dropped == {"train distractor images": 1, "gallery junk images": 1}
    assert build_reference_set(data, ["train"]).num_classes == 2


def test_an_unlabelled_reference_set_is_refused(tmp_path) -> None:
    data = ReIDDataset("folder", tmp_path)
    data.train = _records(tmp_path, [1, None, None])
    with pytest.raises(ReferenceSetError, match="must be labelled, but 2 image"):
        build_reference_set(data, ["train"])


def test_an_empty_reference_split_is_refused(tmp_path) -> None:
    data = ReIDDataset("ref", tmp_path)
    data.query = _records(tmp_path, [1, 2])
    with pytest.raises(ReferenceSetError, match="no labelled image in its split"):
        build_reference_set(data, ["train"])
    data.train = _records(tmp_path, [0, -1])  # only distractors and junk
    with pytest.raises(ReferenceSetError, match="train: 2 images"):
        build_reference_set(data, ["train"])


def test_the_target_itself_is_refused_as_its_own_reference(tiny_synthetic: Path) -> None:
    target = load_dataset(f"synthetic:{tiny_synthetic}")
    with pytest.raises(ReferenceSetError, match="is the target dataset itself"):
        build_reference_set(load_dataset(f"synthetic:{tiny_synthetic}"), ["train"], target)


def test_images_shared_with_the_target_are_refused_naming_their_identities(
    tiny_synthetic: Path, tmp_path: Path
) -> None:
    target = load_dataset(f"synthetic:{tiny_synthetic}")
    copied = []
    people = [r for r in target.gallery if r.pid and r.pid > 0]
    for record in people[:2]:  # a "reference" set holding two target images
        shutil.copy(record.path, tmp_path / record.path.name)
        copied.append(ImageRecord(tmp_path / record.path.name, record.pid, record.camid))
    other = tmp_path / "other_0001_c1s1_000001_01.jpg"
    other.write_bytes(b"not a target image")
    data = ReIDDataset("copy", tmp_path, train=[*copied, ImageRecord(other, 1, 0)])
    pids = sorted({r.pid for r in copied})
    with pytest.raises(ReferenceSetError, match=f"pids {', '.join(map(str, pids))}"):
        build_reference_set(data, ["train"], target)
    renamed = tmp_path / "renamed"  # same name, other bytes: another image
    renamed.mkdir()
    (renamed / copied[0].path.name).write_bytes(b"other bytes")
    lookalike = [ImageRecord(renamed / copied[0].path.name, copied[0].pid, 0)]
    assert find_overlap(lookalike, target.gallery) == []


# ----------------------------------------------------------------------------- sampling


def test_shuffle_batches_cover_each_pass_once_and_skip_negative_labels() -> None:
    labels = np.array([0, 1, -1, 2, 3, 4, 5, -1, 6, 7])
    sampler = ShuffleSampler(labels, batch_size=4, seed=3, iters=4)
    drawn = list(sampler)
    assert len(drawn) == len(sampler) == 16
    usable = sorted(np.flatnonzero(labels >= 0).tolist())
    assert sorted(drawn[:8]) == usable and sorted(drawn[8:16]) == usable  # 2 passes
    assert drawn != usable and list(ShuffleSampler(labels, 4, seed=3, iters=4)) == drawn
    sampler.set_epoch(1)
    assert list(sampler) != drawn  # another epoch, another order
    assert ShuffleSampler(labels, batch_size=4).num_batches == 2  # about one pass
    with pytest.raises(ValueError, match="all 2 labels are negative"):
        ShuffleSampler([-1, -1], batch_size=1)


def test_ddp_shares_are_disjoint_batches_of_the_single_process_stream() -> None:
    labels = np.arange(30)
    whole = list(ShuffleSampler(labels, batch_size=3, seed=1, iters=6))
    rank0 = list(ShuffleSampler(labels, batch_size=3, seed=1, iters=3, rank=0, world_size=2))
    rank1 = list(ShuffleSampler(labels, batch_size=3, seed=1, iters=3, rank=1, world_size=2))
    batches = [whole[i : i + 3] for i in range(0, 18, 3)]
    assert rank0 == [i for b in batches[0::2] for i in b]
    assert rank1 == [i for b in batches[1::2] for i in b]
    assert not set(rank0[:9]) & set(rank1[:9])  # within a pass no image twice


def test_the_trainers_reference_loader_is_sharded_by_rank(
    tiny_synthetic: Path, tmp_path: Path
) -> None:
    from trainer.engine import build_trainer

    target = load_dataset(f"synthetic:{tiny_synthetic}")
    reference = ReIDDataset("ref", tmp_path)
    reference.train = _records(tmp_path, list(range(1, 41)))  # never read: keys only
    config = config_from_dict({**TINY_MAR, "reference": {"batch_size": 8}})
    trainer = build_trainer(config, target, None, reference=reference)
    keys = {}
    for rank in (0, 1):
        trainer.dist = DistInfo(rank=rank, world_size=2)
        loader = trainer.make_reference_loader(epoch=0, iters=2)
        assert loader.batch_size == 4  # half of reference.batch_size per process
        keys[rank] = [key.index for key in loader.sampler]
    assert len(keys[0]) == len(keys[1]) == 8 and not set(keys[0]) & set(keys[1])
    assert trainer.epoch_record["reference_batch_size"] == 8


# ----------------------------------------------------------------------------- the CLI


@pytest.fixture()
def tiny_config(tmp_path: Path) -> Path:
    path = tmp_path / "mar.yaml"
    path.write_text(yaml.safe_dump(TINY_MAR))
    return path


def test_train_refuses_a_reference_set_that_is_the_target(
    tiny_config: Path, tiny_synthetic: Path, tmp_path: Path, capsys
) -> None:
    spec = f"synthetic:{tiny_synthetic}"
    args = ["train", "--config", str(tiny_config), "--data", spec, "--out", str(tmp_path / "r")]
    assert main([*args, "--reference", spec]) == 2
    assert "is the target dataset itself" in capsys.readouterr().err
    assert main(args) == 2  # mar without a reference set
    assert "pass --reference FORMAT:PATH" in capsys.readouterr().err


def test_train_refuses_a_reference_set_for_a_method_without_one(
    tiny_synthetic: Path, tmp_path: Path, capsys
) -> None:
    config = tmp_path / "cc.yaml"
    config.write_text(yaml.safe_dump({**TINY_MAR, "method": {"name": "supervised"}}))
    spec = f"synthetic:{tiny_synthetic}"
    args = ["train", "--config", str(config), "--data", spec, "--reference", spec]
    assert main([*args, "--out", str(tmp_path / "r")]) == 2
    assert "does not use a reference set; drop --reference" in capsys.readouterr().err


def test_init_and_resume_are_exclusive_and_init_needs_a_file(
    tiny_config: Path, tiny_synthetic: Path, tmp_path: Path, capsys
) -> None:
    spec = f"synthetic:{tiny_synthetic}"
    args = ["train", "--config", str(tiny_config), "--data", spec, "--out", str(tmp_path / "r")]
    assert main([*args, "--init", str(tmp_path / "missing.pt")]) == 2
    assert "--init: checkpoint" in capsys.readouterr().err
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "checkpoint_last.pt").write_bytes(b"")
    assert main([*args, "--resume", "--init", str(tmp_path / "r" / "checkpoint_last.pt")]) == 2
    assert "--init starts a new run" in capsys.readouterr().err


def test_the_reference_section_is_validated() -> None:
    base = {"method": {"name": "mar"}}
    config = config_from_dict(base)
    assert (config.reference.splits, config.reference.sampler) == (["train"], "random")
    with pytest.raises(ConfigError, match=r"reference\.sampler"):
        config_from_dict({**base, "reference": {"sampler": "pk_camera"}})
    with pytest.raises(ConfigError, match="multiple of num_instances"):
        config_from_dict({**base, "reference": {"sampler": "pk", "batch_size": 6,
                                                "num_instances": 4}})  # fmt: skip
    with pytest.raises(ConfigError, match=r"reference\.splits"):
        config_from_dict({**base, "reference": {"splits": []}})


# ----------------------------------------------------------------------------- generator


def test_the_synthetic_pid_offset_numbers_a_second_set_apart() -> None:
    small = {"ids_train": 3, "ids_test": 2, "cameras": 2, "images_per_id": 4.0}
    jobs = plan_dataset(GeneratorParams(**small, pid_offset=5000))
    train = {j.key for j in jobs if j.split == "train" and j.mode == "person"}
    assert train == {5001, 5002, 5003}
    assert all(j.filename.startswith(("5001_", "5002_", "5003_")) for j in jobs if j.key in train)
    with pytest.raises(ValueError, match="pid_offset \\+ ids_train \\+ ids_test"):
        GeneratorParams(**small, pid_offset=9996).validate()
