"""Trainer configuration, overrides, inheritance, method params, schedules, CSV logs.

No training here. The config specification: every shipped config resolves and
validates; ``_base_`` inheritance merges mappings and replaces everything else; each
problem is reported once, naming the dotted key and, for an unknown key, the valid
keys of its section and the closest one.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from pydantic import ValidationError

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

CONFIG_DIR = Path(__file__).resolve().parents[1] / "trainer" / "configs"
CONFIGS = sorted(p for p in CONFIG_DIR.glob("*.yaml") if not p.name.startswith("_"))
BASES = sorted(CONFIG_DIR.glob("_*.yaml"))
MINIMAL = {"method": {"name": "supervised"}}


def write(tmp_path: Path, raw: dict, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_round_trips(path: Path, tmp_path: Path) -> None:
    config = load_config(path)
    assert config.method.name in METHODS
    assert path.stem.startswith(config.method.name + "_")
    save_config(config, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml").to_dict() == config.to_dict()


def test_configs_readme_lists_every_config() -> None:
    readme = (CONFIG_DIR / "README.md").read_text()
    for path in [*CONFIGS, *BASES]:
        assert path.name in readme, path.name


def test_every_method_has_its_three_configs_and_the_bases_are_shipped() -> None:
    names = {p.stem for p in CONFIGS}
    methods = ("supervised", "cluster_contrast", "aff_scl", "frifm_adl", "iics", "selective")
    methods += ("mar", "paul")
    datasets = ("synthetic", "market1501", "dukemtmc")
    variants = {"frifm_adl_cluster_contrast_synthetic"}  # labelled variants, synthetic only
    variants |= {"mar_pretrain_synthetic", "mar_pretrain_msmt17"}  # MAR's first stage
    variants |= {"paul_pretrain_synthetic", "paul_pretrain_msmt17"}  # PAUL's first stage
    assert names == {f"{m}_{d}" for m in methods for d in datasets} | variants
    assert [p.name for p in BASES] == ["_base_real.yaml", "_base_synthetic.yaml"]
    for base in BASES:  # a base is not a runnable config: it names no method
        with pytest.raises(ConfigError, match="'method' needs a name"):
            load_config(base)


@pytest.mark.parametrize(
    "method",
    ["supervised", "cluster_contrast", "aff_scl", "frifm_adl", "iics", "selective", "mar", "paul"],
)
def test_dataset_configs_state_only_what_differs(method: str) -> None:
    """Each DukeMTMC-reID config is its Market-1501 config, plus the Duke eps where the
    method's source changes it (AFF_SCL: 0.7; cluster-contrast's code keeps 0.6), or
    PAUL's Duke scale and batch (the code: s = 5, 40 images)."""
    market = load_config(CONFIG_DIR / f"{method}_market1501.yaml").to_dict()
    duke = load_config(CONFIG_DIR / f"{method}_dukemtmc.yaml").to_dict()
    duke_raw = yaml.safe_load((CONFIG_DIR / f"{method}_dukemtmc.yaml").read_text())
    assert duke_raw["_base_"] == f"{method}_market1501.yaml"
    if method == "paul":
        assert {k: v for k, v in duke_raw.items() if k != "_base_"} == {
            "method": {"scale": 5.0}, "train": {"batch_size": 40},
        }  # fmt: skip
        assert (market["method"]["scale"], market["train"]["batch_size"]) == (15.0, 42)
    elif method != "aff_scl":
        assert duke == market and set(duke_raw) == {"_base_"}
    else:
        assert duke_raw["method"] == {"eps": 0.7}
        assert market["method"]["eps"] != 0.7
        assert duke == {**market, "method": {**market["method"], "eps": 0.7}}


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
        (
            MINIMAL,
            ["train.sampler=camera"],
            r"train\.sampler: expected 'pk', 'pk_camera' or 'random', got",
        ),
        (MINIMAL, ["optim.lr=fast"], r"optim\.lr: expected a number, got 'fast'"),
        (MINIMAL, ["optim.lr=0"], r"optim\.lr must be > 0, got 0"),
        (MINIMAL, ["batch_size=30"], r"train: batch_size \(30\) must be a multiple of num_inst"),
        (MINIMAL, ["method.label_smoothing=1.5"], r"method\.label_smoothing must be < 1, got 1\.5"),
        (MINIMAL, ["train.device=gpu"], r"train\.device: expected auto, cpu, cuda or cuda:N"),
        (MINIMAL, ["schedule.milestones=[40, 20]"], r"schedule\.milestones: must be increasing"),
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
    assert raw["method"] == {"name": "supervised", **SupervisedParams(ce_weight=0.5).model_dump()}
    assert isinstance(config_from_dict(raw), TrainerConfig)
    assert config_from_dict(raw) == config


# ----------------------------------------------------------------------------- messages


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.epoch=3"], r"; did you mean train\.epochs\?$"),
        (["optim.lrate=0.1"], r"; did you mean optim\.lr\?$"),
        (["method.smoothing=0.2"], r"did you mean method\.label_smoothing\?$"),
        (["data.transforms.flipp=true"], r"did you mean data\.transforms\.flip\?$"),
        (["trainer.epochs=3"], r"unknown config section\(s\) 'trainer'.*did you mean 'train'\?$"),
        (
            ["train.epoch=3", "train.sed=1"],
            r"did you mean train\.epochs \(for train\.epoch\), train\.seed \(for train\.sed\)\?",
        ),
    ],
)
def test_unknown_keys_suggest_the_closest_valid_key(
    tmp_path: Path, overrides: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, MINIMAL), overrides)


def test_unknown_key_without_a_close_match_lists_the_valid_keys_only(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, MINIMAL), ["eval.zzzz=1"])
    assert str(info.value) == (
        "unknown key(s) eval.zzzz; valid keys in 'eval': every, rerank, metric, batch_size, "
        "camera_prior"
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.transforms.flip=3", "data.transforms.flip: expected true or false, got 3"),
        ("train.amp=1", "train.amp: expected true or false, got 1"),
        ("train.seed='3'", "train.seed: expected an integer, got '3'"),
        ("train.epochs=2.5", "train.epochs: expected an integer, got 2.5"),
        ("schedule.milestones=[20, x]", "schedule.milestones[1]: expected an integer, got 'x'"),
        ("schedule.milestones=20", "schedule.milestones: expected a list, got 20"),
        ("model.name=3", "model.name: expected a string, got 3"),
        ("model.kwargs=3", "model.kwargs: expected a mapping, got 3"),
        ("train=3", "train: expected a mapping of keys, got 3"),
        ("train.progress=sometimes", "train.progress: expected true or false or 'auto', got"),
        ("train.iters_per_epoch=0", "train.iters_per_epoch must be >= 1, got 0"),
        ("optim.lr=.inf", "optim.lr: expected a finite number, got inf"),
    ],
)
def test_a_wrong_value_names_its_dotted_key(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, MINIMAL), [override])
    assert str(info.value).startswith(message)


def test_method_params_are_validated_by_the_methods_own_model(tmp_path: Path) -> None:
    path = write(tmp_path, {"method": {"name": "cluster_contrast"}})
    radius = r"method\.eps: must be 'auto' or a Jaccard radius in \(0, 1\], got 1\.5"
    with pytest.raises(ConfigError, match=radius):
        load_config(path, ["method.eps=1.5"])
    with pytest.raises(ConfigError, match=r"method\.k1: expected an integer"):
        load_config(path, ["method.k1=many"])
    config = load_config(path, ["method.eps=0.45"])
    assert config.method.params.eps == 0.45 and config.method.params.k1 == 30
    with pytest.raises(ValidationError, match="frozen"):
        config.method.params.eps = 0.5  # validated once, then immutable


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, MINIMAL), ["epochs=x", "optim.lr=-1", "eval.metric=l1"])
    assert str(info.value).splitlines() == [
        "train.epochs: expected an integer, got 'x'",
        "optim.lr must be > 0, got -1",
        "eval.metric: expected 'cosine', 'euclidean' or 'sqeuclidean', got 'l1'",
    ]


def test_yaml_numbers_without_a_dot_are_numbers(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("method: {name: supervised}\noptim: {lr: 1e-4, weight_decay: 5E-4}\n")
    config = load_config(path, ["optim.momentum=9e-1"])
    assert (config.optim.lr, config.optim.weight_decay, config.optim.momentum) == (1e-4, 5e-4, 0.9)


def test_assignment_is_validated_too() -> None:
    config = config_from_dict(MINIMAL)
    config.data.spec = "synthetic:/data"
    with pytest.raises(ValidationError):
        config.train.epochs = "many"


# ----------------------------------------------------------------------------- _base_


def test_base_file_settings_are_overridden_by_the_file(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "model": {"name": "resnet18", "kwargs": {"pretrained": None, "last_stride": 1}},
            "method": {"name": "cluster_contrast", "eps": 0.6, "k1": 20},
            "train": {"epochs": 30, "batch_size": 32},
            "schedule": {"milestones": [10, 20]},
        },
        "base.yaml",
    )
    child = {
        "_base_": "base.yaml",
        "model": {"kwargs": {"input_size": [64, 32]}},
        "method": {"eps": 0.7},
        "train": {"epochs": 5},
        "schedule": {"milestones": [3]},
    }
    config = load_config(write(tmp_path, child, "child.yaml"), ["seed=4"])
    assert config.model.name == "resnet18"  # inherited
    assert config.model.kwargs == {"pretrained": None, "last_stride": 1, "input_size": [64, 32]}
    assert (config.method.name, config.method.params.eps, config.method.params.k1) == (
        "cluster_contrast",
        0.7,  # the file wins over its base
        20,
    )
    assert (config.train.epochs, config.train.batch_size, config.train.seed) == (5, 32, 4)
    assert config.schedule.milestones == [3]  # lists are replaced, not merged


def test_base_chain_resolves_relative_to_each_file(tmp_path: Path) -> None:
    write(tmp_path, {"method": {"name": "supervised"}, "train": {"epochs": 1}}, "a/root.yaml")
    write(tmp_path, {"_base_": "../a/root.yaml", "train": {"seed": 2}}, "b/mid.yaml")
    leaf = write(tmp_path, {"_base_": "b/mid.yaml", "train": {"batch_size": 8}}, "leaf.yaml")
    config = load_config(leaf)
    assert (config.train.epochs, config.train.seed, config.train.batch_size) == (1, 2, 8)
    save_config(config, tmp_path / "resolved.yaml")  # saved resolved: no _base_ left
    saved = yaml.safe_load((tmp_path / "resolved.yaml").read_text())
    assert "_base_" not in saved and load_config(tmp_path / "resolved.yaml") == config


def test_a_null_in_the_file_replaces_the_bases_value(tmp_path: Path) -> None:
    write(tmp_path, {**MINIMAL, "train": {"iters_per_epoch": 50, "grad_clip": 1.0}}, "b.yaml")
    config = load_config(write(tmp_path, {"_base_": "b.yaml", "train": {"grad_clip": None}}))
    assert (config.train.iters_per_epoch, config.train.grad_clip) == (50, None)


@pytest.mark.parametrize(
    ("bases", "cycle"),
    [
        ({"a": "a"}, "a -> a"),  # itself
        ({"a": "b", "b": "a"}, "a -> b -> a"),
        ({"a": "b", "b": "c", "c": "b"}, "a -> b -> c -> b"),  # a cycle further up
    ],
)
def test_base_cycles_are_an_error(tmp_path: Path, bases: dict[str, str], cycle: str) -> None:
    for name, base in bases.items():
        write(tmp_path, {**MINIMAL, "_base_": f"{base}.yaml"}, f"{name}.yaml")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "a.yaml")
    message = str(info.value).replace(f"{tmp_path}/", "").replace(".yaml", "")
    assert message == f"_base_ cycle: {cycle}"


def test_missing_base_names_the_file_that_wants_it(tmp_path: Path) -> None:
    path = write(tmp_path, {**MINIMAL, "_base_": "nowhere.yaml"})
    with pytest.raises(ConfigError, match=r"nowhere\.yaml not found \(the _base_ of .*c\.yaml\)"):
        load_config(path)


@pytest.mark.parametrize("base", [["a.yaml"], 3, ""])
def test_base_must_be_one_file_name(tmp_path: Path, base: object) -> None:
    with pytest.raises(ConfigError, match="_base_ must be a file name"):
        load_config(write(tmp_path, {**MINIMAL, "_base_": base}))


def test_base_is_not_a_config_key_elsewhere(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key\(s\) train\._base_"):
        load_config(write(tmp_path, {**MINIMAL, "train": {"_base_": "x.yaml"}}))


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


def test_cpu_threads_default_to_a_share_of_the_cores_per_local_process(monkeypatch):
    import os

    from trainer.engine import cpu_threads

    cores = len(os.sched_getaffinity(0))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert cpu_threads("auto") == cores
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(cores * 2))  # more processes than cores
    assert cpu_threads("auto") == 1
    assert cpu_threads(3) == 3


def test_train_threads_is_auto_or_a_positive_count(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method: {name: supervised}\n")
    assert load_config(path).train.threads == "auto"
    assert load_config(path, ["train.threads=1"]).train.threads == 1
    with pytest.raises(ConfigError, match=r"train\.threads"):
        load_config(path, ["train.threads=0"])


def _wait_policy_after_importing_python_m_trainer(preset: str | None) -> str:
    """``OMP_WAIT_POLICY`` once ``trainer/__main__.py`` has run (without running main)."""
    import subprocess
    import sys

    setup = "os.environ.pop('OMP_WAIT_POLICY', None)"
    if preset is not None:
        setup = f"os.environ['OMP_WAIT_POLICY'] = {preset!r}"
    probe = (
        f"import os, runpy; {setup}; runpy.run_module('trainer', run_name='probe'); "
        "print(os.environ['OMP_WAIT_POLICY'])"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_python_m_trainer_makes_waiting_openmp_threads_sleep():
    assert _wait_policy_after_importing_python_m_trainer(None) == "PASSIVE"
    assert _wait_policy_after_importing_python_m_trainer("ACTIVE") == "ACTIVE"  # the user's wins
