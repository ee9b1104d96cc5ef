"""Trainer configuration, overrides, method params, schedules, CSV logs (no training)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from trainer.config import (
    ALIASES,
    ConfigError,
    TrainerConfig,
    config_from_dict,
    load_config,
    parse_override,
    save_config,
)
from trainer.logging_utils import CsvLog
from trainer.methods import METHODS, TrainInfo, UnknownMethodError, build_method
from trainer.methods.supervised import SupervisedParams
from trainer.optim import LRSchedule, build_optimizer, param_groups

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "trainer" / "configs").glob("*.yaml"))
MINIMAL = {"method": {"name": "supervised"}}


def write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_round_trips(path: Path, tmp_path: Path) -> None:
    config = load_config(path)
    assert config.method.name in METHODS
    assert path.stem.startswith(config.method.name + "_")
    save_config(config, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml").to_dict() == config.to_dict()


def test_configs_readme_lists_every_config() -> None:
    readme = (CONFIGS[0].parent / "README.md").read_text()
    for path in CONFIGS:
        assert path.name in readme, path.name


def test_defaults_are_the_cluster_contrast_ones() -> None:
    config = config_from_dict(MINIMAL)
    assert (config.optim.name, config.optim.lr, config.optim.weight_decay) == ("adam", 3.5e-4, 5e-4)
    assert (config.schedule.name, config.schedule.milestones, config.schedule.gamma) == (
        "step",
        [20],
        0.1,
    )
    assert (config.train.epochs, config.train.iters_per_epoch) == (50, 200)
    assert config.method.params == SupervisedParams()


def test_overrides_aliases_and_yaml_values(tmp_path: Path) -> None:
    path = write(tmp_path, {**MINIMAL, "train": {"epochs": 10}})
    overrides = [
        "epochs=3",
        "iters_per_epoch=null",
        "batch_size=32",
        "device=cpu",
        "seed=7",
        "lr=1e-4",  # YAML 1.1 reads this as a string; float fields accept it
        "optim.name=sgd",
        "optim.nesterov=true",
        "schedule.milestones=[2, 4]",
        "data.transforms.flip=false",
        "model.kwargs.input_size=[64, 32]",
        "method.triplet_margin=null",
    ]
    config = load_config(path, overrides)
    assert (config.train.epochs, config.train.iters_per_epoch) == (3, None)
    assert (config.train.batch_size, config.train.device, config.train.seed) == (32, "cpu", 7)
    assert config.optim.lr == 1e-4 and config.optim.name == "sgd" and config.optim.nesterov
    assert config.schedule.milestones == [2, 4]
    assert config.data.transforms.flip is False
    assert config.model.kwargs == {"input_size": [64, 32]}
    assert config.method.params.triplet_margin is None
    assert set(ALIASES) >= {"epochs", "iters_per_epoch", "batch_size", "device", "seed"}


@pytest.mark.parametrize(
    ("raw", "overrides", "message"),
    [
        ({**MINIMAL, "train": {"epoch": 3}}, [], r"train\.epoch; valid keys in 'train': epochs"),
        (MINIMAL, ["optim.lrate=0.1"], r"optim\.lrate.*valid keys in 'optim': name, lr"),
        (MINIMAL, ["data.transforms.blur=1"], r"valid keys in 'data\.transforms': flip, pad"),
        (MINIMAL, ["method.margin=0.3"], r"method\.margin.*label_smoothing, triplet_margin"),
        ({**MINIMAL, "trainer": {}}, [], r"unknown config section.*valid sections: method, model"),
        ({"method": {"name": "nope"}}, [], r"unknown method 'nope'; available methods: .*superv"),
        ({}, [], r"'method' needs a name"),
        (MINIMAL, ["train.epochs=three"], r"train\.epochs: expected an integer"),
        (MINIMAL, ["train.sampler=random"], r"'random' is not one of 'pk', 'pk_camera'"),
        (MINIMAL, ["optim.lr=fast"], r"optim\.lr: expected a number"),
        (MINIMAL, ["batch_size=30"], r"multiple of train\.num_instances"),
        (MINIMAL, ["method.label_smoothing=1.5"], r"label_smoothing must be in \[0, 1\)"),
        (MINIMAL, ["epochs"], r"not KEY=VALUE"),
        (
            {**MINIMAL, "train": {"epochs": 3}},
            ["train.epochs.x=1"],
            r"train\.epochs is a value, not a section",
        ),
    ],
)
def test_bad_configs_are_rejected_with_the_valid_choices(
    tmp_path: Path, raw: dict, overrides: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, raw), overrides)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")


def test_parse_override_keeps_strings() -> None:
    assert parse_override("data.spec=synthetic:/tmp/x") == ("data.spec", "synthetic:/tmp/x")
    assert parse_override("epochs=5") == ("train.epochs", 5)


def test_to_dict_flattens_method_params() -> None:
    config = config_from_dict({"method": {"name": "supervised", "ce_weight": 0.5}})
    raw = config.to_dict()
    assert raw["method"] == {"name": "supervised", **vars(SupervisedParams(ce_weight=0.5))}
    assert isinstance(config_from_dict(raw), TrainerConfig)


# ----------------------------------------------------------------------------- methods


def tiny_encoder() -> torch.nn.Module:
    from reid.models import build_model

    return build_model("resnet18", pretrained=None, input_size=(64, 32))


def test_build_method_rejects_unknown_keys_and_names() -> None:
    info = TrainInfo(10, 2, 5, 512, torch.device("cpu"))
    encoder = tiny_encoder()
    method = build_method("supervised", encoder, {"label_smoothing": 0.2}, info)
    assert method.params.label_smoothing == 0.2
    assert method.classifier.weight.shape == (5, 512)
    assert [id(p) for p in method.extra_parameters()] == [id(method.classifier.weight)]
    with pytest.raises(ConfigError, match="valid keys in 'method': label_smoothing"):
        build_method("supervised", encoder, {"smoothing": 0.1}, info)
    with pytest.raises(UnknownMethodError, match=r"available methods: .*supervised"):
        build_method("nope", encoder, {}, info)
    with pytest.raises(ValueError, match="unlabeled"):
        build_method("supervised", encoder, {}, TrainInfo(10, 2, None, 512, torch.device("cpu")))


def test_supervised_step_returns_weighted_losses() -> None:
    info = TrainInfo(16, 2, 4, 512, torch.device("cpu"))
    method = build_method("supervised", tiny_encoder(), {"triplet_weight": 0.5}, info)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    batch = {"target": {"image": torch.randn(8, 3, 64, 32), "label": labels}}
    out = method.training_step(batch)
    assert set(out.losses) == {"ce", "triplet"}
    assert out.losses["ce"].item() == pytest.approx(math.log(4), abs=0.2)
    sum(out.losses.values()).backward()
    assert method.classifier.weight.grad is not None


# ----------------------------------------------------------------------------- optim


def test_step_schedule_with_warmup() -> None:
    s = LRSchedule("step", total_epochs=50, warmup_epochs=10, warmup_factor=0.01, milestones=[20])
    assert s.factor(0) == pytest.approx(0.01)
    assert s.factor(5) == pytest.approx(0.01 + 0.99 * 0.5)
    assert s.factor(10) == 1.0 and s.factor(19.99) == 1.0
    assert s.factor(20) == pytest.approx(0.1) and s.factor(49.5) == pytest.approx(0.1)


def test_cosine_schedule() -> None:
    s = LRSchedule("cosine", total_epochs=10, min_lr_factor=0.1)
    assert s.factor(0) == 1.0
    assert s.factor(5) == pytest.approx(0.55)
    assert s.factor(10) == pytest.approx(0.1)


def test_param_groups_and_lr_application() -> None:
    encoder = tiny_encoder()
    extra = [torch.nn.Parameter(torch.zeros(3))]
    groups = param_groups(encoder, extra, lr=1e-3, backbone_lr_mult=0.1)
    assert [g["name"] for g in groups] == ["backbone", "head", "method"]
    opt = build_optimizer(groups, "sgd", lr=1e-3, momentum=0.9, nesterov=True)
    LRSchedule("step", total_epochs=5, milestones=[1]).apply(opt, 1.5)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-5, 1e-4, 1e-4])
    n = sum(p.numel() for p in encoder.parameters() if p.requires_grad) + 3
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == n


# ----------------------------------------------------------------------------- csv log


def test_csv_log_grows_columns_and_truncates(tmp_path: Path) -> None:
    log = CsvLog(tmp_path / "m.csv")
    log.append({"epoch": 1, "loss": 1.5})
    log.append({"epoch": 2, "loss": 1.25, "mAP": 0.5})
    log.append({"epoch": 3, "loss": 1.0})
    again = CsvLog(tmp_path / "m.csv")
    assert again.columns == ["epoch", "loss", "mAP"]
    assert [r["mAP"] for r in again.rows] == ["", "0.5", ""]
    again.truncate(1)
    assert len(CsvLog(tmp_path / "m.csv")) == 1
