"""The results runner (scripts/results_synthetic.py): spread over seeds, resumable runs."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "results_synthetic.py"


@pytest.fixture(scope="module")
def runner():
    spec = importlib.util.spec_from_file_location("results_synthetic", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _result(row: str, seed: int, map_: float) -> dict:
    scores = {"mAP": map_, "rank1": map_ + 0.1}
    return {"row": row, "seed": seed, "train_seconds": 60.0, "scores": scores,
            "commands": ["python -m trainer"]}  # fmt: skip


def test_rows_are_summarised_as_mean_sample_std_and_range(runner) -> None:
    s = runner.summarise([0.30, 0.36, 0.33])
    assert s == pytest.approx({"mean": 33.0, "std": 3.0, "min": 30.0, "max": 36.0})
    assert runner.summarise([0.5])["std"] == 0.0  # one run: no spread to report
    row = runner.ROWS[1]
    text = runner.table(
        [(row, 0, [_result(row.name, s, m) for s, m in enumerate([0.3, 0.36, 0.33])])]
    )
    assert "| 3 | 33.0 ± 3.0 (30.0-36.0) | 43.0 ± 3.0 (40.0-46.0) | 1.0 min |" in text
    single = runner.table([(row, 0, [_result(row.name, 0, 0.3)])])
    assert "| 1 | 30.0 (one run) | 40.0 (one run) |" in single  # no spread to claim


def test_every_trained_row_names_a_shipped_config_and_main_rows_cover_the_demo(runner) -> None:
    configs = SCRIPT.parent.parent / "trainer" / "configs"
    for row in runner.ROWS:
        assert (row.model is None) != (row.config is None), row.name
        assert row.config is None or (configs / row.config).is_file(), row.name
    main = {r.name for r in runner.ROWS if r.main}
    assert {"aff_scl_both", "cluster_contrast", "iics", "frifm_adl_both", "supervised"} <= main
    assert 1 not in runner.TEST_DATA_SEEDS  # data seed 1 is the validation set


def test_a_finished_run_is_reused_and_an_unfinished_one_started_again(
    runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    row = runner.ROWS[1]
    done = tmp_path / "done"
    done.mkdir()
    (done / "result.json").write_text(json.dumps(_result(row.name, 0, 0.4)))
    calls = []
    monkeypatch.setattr(runner.subprocess, "run", lambda *a, **k: calls.append(a) or 1 / 0)
    assert runner.run_one(row, "synthetic:x", done, 0, [])["scores"]["mAP"] == 0.4
    assert calls == []
    with pytest.raises(ZeroDivisionError):  # no result yet: it trains
        runner.run_one(row, "synthetic:x", tmp_path / "new", 0, [])
    assert "train.seed=0" in calls[0][0] and "eval.every=0" in calls[0][0]


def test_the_thread_perturbation_pairs_runs_of_the_same_seed(runner) -> None:
    rows = {r.name: r for r in runner.ROWS}
    two = [_result("aff_scl_both", s, m) for s, m in [(0, 0.30), (1, 0.40)]]
    one = [_result("aff_scl_both_threads1", s, m) for s, m in [(1, 0.37), (0, 0.32)]]
    groups = [(rows["aff_scl_both"], 0, two), (rows["aff_scl_both_threads1"], 0, one)]
    text = runner.perturbation(groups)
    assert "seed 0: 30.0 vs 32.0" in text and "seed 1: 40.0 vs 37.0" in text
    assert "mean |difference| 2.5" in text


def test_a_row_scoring_another_rows_run_evaluates_it_again_without_training(
    runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = {r.name: r for r in runner.ROWS}
    row = rows["selective_camera_prior"]
    assert row.scores_run_of == "selective" and rows["selective"].config == row.config
    trained = tmp_path / "selective" / "seed0"
    with pytest.raises(SystemExit, match="--rows selective selective_camera_prior"):
        runner.run_one(row, "synthetic:x", trained, 0, [])  # nothing trained yet
    trained.mkdir(parents=True)
    (trained / "result.json").write_text(json.dumps(_result("selective", 0, 0.4)))
    calls = []

    class Done:
        stdout = json.dumps({"mAP": 0.45, "rank1": 0.6})

    monkeypatch.setattr(runner.subprocess, "run", lambda cmd, **k: calls.append(cmd) or Done)
    result = runner.run_one(row, "synthetic:x", trained, 0, [])
    (cmd,) = calls  # one evaluation, no training
    assert cmd[2:4] == ["trainer", "eval"] and cmd[-2:] == ["--camera-prior", "0.05"]
    assert result["scores"]["mAP"] == 0.45 and result["train_seconds"] == 60.0
    assert json.loads((trained / "result.json").read_text())["scores"]["mAP"] == 0.4
    assert (trained / "result_selective_camera_prior.json").is_file()


def test_mar_rows_train_with_the_reference_set_and_start_from_a_matching_pretraining(
    runner, tmp_path: Path
) -> None:
    rows = runner.ROWS_BY_NAME
    mar = [r for r in runner.ROWS if r.name.startswith("mar")]
    assert {"mar", "mar_no_cml", "mar_no_ral", "mar_no_cml_ral", "mar_l34", "mar_l14",
            "mar_l4", "mar_no_pretrain", "mar_pretrain"} <= {r.name for r in mar}  # fmt: skip
    for row in mar:
        assert row.reference, row.name
        if row.init_row:  # the pre-training has the same encoder (fusion layers)
            first = rows[row.init_row]
            assert first.config == "mar_pretrain_synthetic.yaml" and not first.init_row
            fusion = [o for o in row.overrides if o.startswith("model.")]
            assert fusion == first.overrides, row.name
    assert rows["mar_no_pretrain"].init_row is None
    init = tmp_path / "pre" / "checkpoint_last.pt"
    cmd = runner.train_command(rows["mar"], "synthetic:t", tmp_path, 0, [], "synthetic:r", init)
    assert cmd[cmd.index("--reference") + 1] == "synthetic:r"
    assert cmd[cmd.index("--init") + 1] == str(init)
    with pytest.raises(SystemExit, match="starts from a run of row mar_pretrain"):
        runner.run_one(rows["mar"], "synthetic:t", tmp_path / "run", 0, [], "synthetic:r", init)
    assert "--pid-offset" in runner.REFERENCE_ARGS  # its labels never collide with the target's


def test_the_real_crops_mode_runs_the_main_rows_on_the_cut_vtest_set(
    runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cut = tmp_path / "vtest0"
    made = []

    def fake_cut(data_dir: Path, split_seed: int) -> str:
        made.append((data_dir, split_seed))
        data_dir.mkdir(parents=True, exist_ok=True)
        meta = {
            "frames": 795,
            "settings": {"fps": 10.0, "cameras": 4},
            "identities": {"train": 50, "test": 14},
            "images": {"train": 226, "query": 30, "gallery": 93},
            "label_noise": {"tracks_starting_inside": 40, "tracks_kept": 60},
        }
        (data_dir / "meta.json").write_text(json.dumps(meta))
        return f"market1501:{data_dir}"

    runs = []

    def fake_run(row, spec, run_dir, seed, extra, *streams):
        runs.append((row.name, spec, run_dir))
        return _result(row.name, seed, 0.3 + 0.01 * seed)

    monkeypatch.setattr(runner, "ensure_vtest_set", fake_cut)
    monkeypatch.setattr(runner, "ensure_reference", lambda ref_dir: "synthetic:ref")
    monkeypatch.setattr(runner, "run_one", fake_run)
    written = []
    monkeypatch.setattr(runner, "update_section", lambda *a: written.append(a))
    assert runner.main(["--dataset", "vtest", "--out", str(tmp_path)]) == 0
    assert made == [(cut, 0)]  # split seed 0 by default
    main_rows = {r.name for r in runner.ROWS if r.main}
    started_from = {r.init_row for r in runner.ROWS if r.main and r.init_row}
    assert {name for name, _, _ in runs} == main_rows | started_from
    assert all(spec == f"market1501:{cut}" and run_dir.parent.parent == cut
               for _, spec, run_dir in runs)  # fmt: skip
    ((path, section, body),) = written
    assert section == runner.REAL_SECTION and path.name == "RESULTS.md"
    assert "50 train identities (226 crops)" in body and "--dataset vtest" in body
    runs.clear()
    assert runner.main(["--dataset", "vtest", "--out", str(tmp_path), "--no-write",
                        "--rows", "iics", "frifm_adl_adl"]) == 0  # fmt: skip
    assert [name for name, _, _ in runs] == ["iics"] * 3 + ["frifm_adl_adl"] * 3  # named: any row


def test_paul_rows_pretrain_on_the_reference_set_and_the_unsupervised_rows_start_from_it(
    runner, tmp_path: Path
) -> None:
    rows = runner.ROWS_BY_NAME
    paul = [r for r in runner.ROWS if r.name.startswith("paul")]
    assert {"paul_pretrain", "paul", "paul_ipfl_only", "paul_pedal_only", "paul_stripes",
            "paul_random", "paul_p4", "paul_p8"} <= {r.name for r in paul}  # fmt: skip
    for row in paul:
        pretraining = row.config == "paul_pretrain_synthetic.yaml"
        assert row.reference == pretraining, row.name  # only the pre-training reads it
        if not pretraining:  # every unsupervised row starts from a pre-training of its encoder
            first = rows[row.init_row]
            assert first.config == "paul_pretrain_synthetic.yaml" and not first.init_row
            model = [o for o in row.overrides if o.startswith("model.")]
            assert model == [o for o in first.overrides if o.startswith("model.")], row.name
    assert rows["paul_ipfl_only"].overrides == ["method.pedal=false"]
    assert rows["paul_pedal_only"].overrides == ["method.ipfl=false"]
    assert "method.generator_lr_mult=0" in rows["paul_pretrain_stripes"].overrides
    init = tmp_path / "pre" / "checkpoint_last.pt"
    cmd = runner.train_command(rows["paul"], "synthetic:t", tmp_path, 0, [], "synthetic:r", init)
    assert "--reference" not in cmd and cmd[cmd.index("--init") + 1] == str(init)
    cmd = runner.train_command(rows["paul_pretrain"], "synthetic:t", tmp_path, 0, [], "synthetic:r")
    assert cmd[cmd.index("--reference") + 1] == "synthetic:r"


def test_rows_whose_pretraining_reads_the_reference_set_get_it_generated(
    runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--rows paul`` alone: its init row trains with the reference set, so it is made."""
    made, given = [], []
    monkeypatch.setattr(runner, "ensure_data", lambda path, seed: f"synthetic:{path}")
    monkeypatch.setattr(runner, "ensure_reference", lambda path: made.append(path) or "synthetic:r")

    def run_one(row, spec, run_dir, seed, extra, reference=None, init=None):
        given.append((row.name, reference))
        return _result(row.name, seed, 0.5)

    monkeypatch.setattr(runner, "run_one", run_one)
    args = ["--out", str(tmp_path), "--rows", "paul", "--seeds", "0", "--data-seeds", "0"]
    assert runner.main([*args, "--no-write"]) == 0
    assert made == [tmp_path / "reference"]
    assert given == [("paul_pretrain", "synthetic:r"), ("paul", "synthetic:r")]


def test_a_run_stopped_part_way_resumes_from_its_last_checkpoint(
    runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = {r.name: r for r in runner.ROWS}
    stopped = tmp_path / "mar" / "seed0"
    stopped.mkdir(parents=True)
    (stopped / "checkpoint_last.pt").write_bytes(b"")
    init = tmp_path / "pretrain.pt"
    init.write_bytes(b"")
    calls = []
    monkeypatch.setattr(runner.subprocess, "run", lambda cmd, **k: calls.append(cmd) or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        runner.run_one(rows["mar"], "synthetic:x", stopped, 0, [], "synthetic:ref", init)
    assert "--resume" in calls[0] and "--init" not in calls[0]  # --init was taken at the start
    assert "--reference" in calls[0]


def test_the_label_free_choice_is_scored_beside_the_last_checkpoint(
    runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    row = {r.name: r for r in runner.ROWS}["aff_scl_both"]
    run = tmp_path / "run"
    run.mkdir()
    (run / "model_selected.pt").write_bytes(b"")
    (run / "selection.json").write_text(json.dumps({"selected": {"epoch": 0}}))
    calls = []

    class Done:
        stdout = json.dumps({"mAP": 0.5, "rank1": 0.6})

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        if cmd[2:4] == ["trainer", "eval"] and "model_selected.pt" in cmd[5]:
            return type("Selected", (), {"stdout": json.dumps({"mAP": 0.4, "rank1": 0.5})})
        return Done

    monkeypatch.setattr(runner.subprocess, "run", fake_run)
    result = runner.run_one(row, "synthetic:x", run, 0, [])
    evals = [c for c in calls if c[2:4] == ["trainer", "eval"]]
    assert [Path(c[5]).name for c in evals] == ["checkpoint_last.pt", "model_selected.pt"]
    assert result["scores"]["mAP"] == 0.5
    assert result["selected"] == {"scores": {"mAP": 0.4, "rank1": 0.5}, "epoch": 0}
    assert "| 40.0 (one run) (0) |" in runner.table([(row, 0, [result])])


def test_a_finished_run_whose_config_changed_since_is_trained_again(
    runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainer.config import load_config, save_config

    row = {r.name: r for r in runner.ROWS}["aff_scl_both"]
    run = tmp_path / "seed0"
    run.mkdir()
    overrides = ["train.progress=false", "eval.every=0", "train.seed=0", *row.overrides]
    config = runner.REPO / "trainer" / "configs" / row.config
    save_config(
        load_config(config, [*overrides, "data.spec=synthetic:/elsewhere"]), run / "config.yaml"
    )
    (run / "result.json").write_text(json.dumps(_result(row.name, 0, 0.4)))
    assert runner.stale_settings(row, run, 0, []) is None  # same recipe, other data path
    save_config(load_config(config, [*overrides, "method.eps=0.61"]), run / "config.yaml")
    assert "method.eps: 0.61 -> " in runner.stale_settings(row, run, 0, [])
    calls = []
    monkeypatch.setattr(runner.subprocess, "run", lambda cmd, **k: calls.append(cmd) or 1 / 0)
    with pytest.raises(ZeroDivisionError):  # trains again instead of reusing result.json
        runner.run_one(row, "synthetic:x", run, 0, [])
    assert (tmp_path / "seed0.stale" / "result.json").is_file()
    assert calls[0][2:4] == ["trainer", "train"]
