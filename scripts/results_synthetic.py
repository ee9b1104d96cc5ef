"""Reproduce the method comparisons of docs/RESULTS.md (synthetic set, real crops), over seeds.

Every row trains on the same data with the same budget (the ``*_synthetic.yaml``
configs: 10 epochs x 30 iterations, batch 64, 128x64, pretrained MobileNetV2 unless the
row says otherwise), once per training seed (``train.seed``), and is scored on the
query/gallery split with the **last** checkpoint (never the best-on-test one, so
nothing is tuned on the test split). The main rows are also run on a second synthetic
data seed. Each row is reported as mean +- std (sample std) and min-max over its runs.

The MAR rows and PAUL's pre-training rows also train on a labelled reference set, the
stand-in for MSMT17 that the runner generates once (``REFERENCE_ARGS``: other people,
cameras and difficulty, labels numbered apart from the target's): extra supervision the
other rows do not get. A row with ``init_row`` starts from that row's checkpoint of the
same data and train seed (``--init``: MAR's reference pre-training, PAUL's supervised
patch pre-training), which is trained first when missing.

    .venv/bin/python scripts/results_synthetic.py [--out runs/results] [--rows NAME ...]
        [--seeds 0 1 2] [--data-seeds 0 2] [--override KEY=VALUE ...] [--no-write]

Every run is resumable: a finished run (``result.json`` in its folder) is reused, an
unfinished one continues from its last checkpoint (``--resume``), so the runner can be
stopped and run in parts. A finished run whose saved ``config.yaml`` differs from what
its row trains today (a config file changed since) is moved aside to ``seedN.stale``
and trained again, so no table mixes recipes. Besides the last checkpoint, the model the
trainer chose without labels (``model_selected.pt``) is scored too. The
table is printed and, for a full run with no ``--override``, written into
docs/RESULTS.md. ``--override`` applies to every trained row (validation sweeps:
``--data-seeds 1 --rows aff_scl_both --override train.epochs=8 --out runs/val/e8``).

``--dataset vtest`` runs the main rows on real crops instead: OpenCV's ``vtest.avi``
(fetched from Debian's opencv-doc) cut by ``python -m gallery dataset`` into tracks as
identities and 4 strips of the frame as pseudo-cameras; ``--data-seeds`` are then the
seeds of its train/test identity split (default 0). Same configs as a user would take
them, no tuning.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "client"))

from _report import machine_summary, update_section  # noqa: E402

DATA_SIZE = ["--ids-train", "150", "--ids-test", "100", "--cameras", "6"]
PRETRAINED = '{"pretrained": "imagenet", "input_size": [128, 64]}'
REFERENCE_ARGS = ["--ids-train", "300", "--ids-test", "10", "--cameras", "8",
                  "--difficulty", "1.5", "--pid-offset", "5000", "--seed", "11"]  # fmt: skip
"""The synthetic reference set of the MAR and PAUL rows (stand-in for MSMT17): twice the
target's train identities, 8 cameras instead of 6, difficulty 1.5 instead of 2, pids
5001..."""
SYNTHETIC_SECTION = "## Synthetic dataset: method comparison"
REAL_SECTION = "## Real crops (vtest.avi): method comparison"
TEST_DATA_SEEDS = (0, 2)
"""Data seeds of the test splits; seed 1 is the validation set (settings are chosen
there, never on these)."""


@dataclass(frozen=True)
class Row:
    name: str
    label: str
    config: str | None = None
    overrides: list[str] = field(default_factory=list)
    model: str | None = None
    """For direct-transfer rows: evaluate this untrained encoder instead of training."""
    main: bool = False
    """Main rows are also run on the second data seed."""
    eval_args: list[str] = field(default_factory=list)
    """Extra ``python -m trainer eval`` arguments (e.g. ``--camera-prior 0.05``)."""
    scores_run_of: str | None = None
    """Score the trained run of this other row (same config) instead of training again."""
    reference: bool = False
    """Train with the synthetic reference set (``--reference``; MAR, PAUL's pre-training)."""
    init_row: str | None = None
    """Start from this other row's last checkpoint of the same data and train seed
    (``--init``; MAR's reference pre-training, PAUL's patch pre-training)."""


ROWS = [
    Row("direct_transfer", "direct transfer (ImageNet MobileNetV2, no training)",
        model="mobilenetv2", main=True),
    Row("cluster_contrast", "cluster_contrast (per-instance memory, reference)",
        "cluster_contrast_synthetic.yaml", main=True),
    Row("cluster_contrast_batch_mean", "cluster_contrast, batch-mean memory",
        "cluster_contrast_synthetic.yaml", ["method.memory_update=batch_mean"]),
    Row("cluster_contrast_random_init", "cluster_contrast, random init",
        "cluster_contrast_synthetic.yaml", ["model.kwargs.pretrained=null"]),
    Row("aff_scl_mean", "aff_scl, mean memory only", "aff_scl_synthetic.yaml",
        ["method.memories=mean"]),
    Row("aff_scl_hard", "aff_scl, hard memory only", "aff_scl_synthetic.yaml",
        ["method.memories=hard"]),
    Row("aff_scl_both", "aff_scl, both memories (paper; the demo)", "aff_scl_synthetic.yaml",
        ["method.memories=both"], main=True),
    Row("aff_scl_both_threads1", "aff_scl, both memories, 1 thread (perturbation)",
        "aff_scl_synthetic.yaml", ["method.memories=both", "train.threads=1"]),
    Row("iics", "iics (= frifm_adl with neither)", "iics_synthetic.yaml", main=True),
    Row("frifm_adl_frifm", "frifm_adl on IICS, FRIFM only", "frifm_adl_synthetic.yaml",
        ["model.name=frifm_mobilenetv2", "method.adl=false"]),
    Row("frifm_adl_adl", "frifm_adl on IICS, ADL only", "frifm_adl_synthetic.yaml",
        ["model.name=mobilenetv2", "method.adl=true"]),
    Row("frifm_adl_both", "frifm_adl on IICS, FRIFM + ADL (paper)", "frifm_adl_synthetic.yaml",
        ["model.name=frifm_mobilenetv2", "method.adl=true"], main=True),
    Row("selective_warmup_only", "selective, warm-up only (self positive + random negatives)",
        "selective_synthetic.yaml", ["method.warmup_epochs=10"]),
    Row("selective_positives", "selective, + multiple positives (random negatives)",
        "selective_synthetic.yaml", ["method.negatives=random"]),
    Row("selective", "selective, + selected negatives (full; global + local)",
        "selective_synthetic.yaml", main=True),
    Row("selective_global_only", "selective, global branch only", "selective_synthetic.yaml",
        ["method.local_weight=0", "method.global_weight=1", "model.kwargs.global_weight=1"]),
    Row("selective_camera0", "selective, camera weight 0", "selective_synthetic.yaml",
        ["method.camera_weight=0"]),
    Row("selective_camera003", "selective, camera weight 0.03", "selective_synthetic.yaml",
        ["method.camera_weight=0.03"]),
    Row("selective_camera_prior", "selective (full), scored with the camera prior 0.05",
        "selective_synthetic.yaml", main=True, eval_args=["--camera-prior", "0.05"],
        scores_run_of="selective"),
    Row("supervised", "supervised upper bound (true labels)", "supervised_synthetic.yaml",
        main=True),
    Row("mar_pretrain", "mar, reference pre-training only (AL; l1+l3+l4)",
        "mar_pretrain_synthetic.yaml", reference=True),
    Row("mar", "mar, full (MDL + CML + RAL; l1+l3+l4; pre-trained)", "mar_synthetic.yaml",
        main=True, reference=True, init_row="mar_pretrain"),
    Row("mar_no_cml", "mar, w/o CML", "mar_synthetic.yaml", ["method.cml=false"],
        reference=True, init_row="mar_pretrain"),
    Row("mar_no_ral", "mar, w/o RAL (AL + RJ)", "mar_synthetic.yaml", ["method.ral=false"],
        reference=True, init_row="mar_pretrain"),
    Row("mar_no_cml_ral", "mar, w/o CML and RAL (MDL only)", "mar_synthetic.yaml",
        ["method.cml=false", "method.ral=false"], reference=True, init_row="mar_pretrain"),
    Row("mar_ral_only", "mar, RAL only (AL + RJ; w/o MDL and CML: the reference supervision "
        "alone)", "mar_synthetic.yaml", ["method.mdl=false", "method.cml=false"],
        reference=True, init_row="mar_pretrain"),
    Row("mar_pretrain_l34", "mar, reference pre-training only (l3+l4)",
        "mar_pretrain_synthetic.yaml", ["model.kwargs.fusion_layers=[3,4]"], reference=True),
    Row("mar_l34", "mar, full, fusion l3+l4", "mar_synthetic.yaml",
        ["model.kwargs.fusion_layers=[3,4]"], reference=True, init_row="mar_pretrain_l34"),
    Row("mar_pretrain_l14", "mar, reference pre-training only (l1+l4)",
        "mar_pretrain_synthetic.yaml", ["model.kwargs.fusion_layers=[1,4]"], reference=True),
    Row("mar_l14", "mar, full, fusion l1+l4", "mar_synthetic.yaml",
        ["model.kwargs.fusion_layers=[1,4]"], reference=True, init_row="mar_pretrain_l14"),
    Row("mar_pretrain_l4", "mar, reference pre-training only (l4)",
        "mar_pretrain_synthetic.yaml", ["model.kwargs.fusion_layers=[4]"], reference=True),
    Row("mar_l4", "mar, full, layer4 only (no fusion)", "mar_synthetic.yaml",
        ["model.kwargs.fusion_layers=[4]"], reference=True, init_row="mar_pretrain_l4"),
    Row("mar_no_pretrain", "mar, full, no reference pre-training (ImageNet, random agents)",
        "mar_synthetic.yaml", reference=True),
    Row("paul_pretrain", "paul, supervised patch pre-training only (PatchNet direct transfer)",
        "paul_pretrain_synthetic.yaml", reference=True),
    Row("paul", "paul, full (PEDAL + IPFL; PGN; pre-trained)", "paul_synthetic.yaml",
        main=True, init_row="paul_pretrain"),
    Row("paul_ipfl_only", "paul, + IPFL only (w/o PEDAL)", "paul_synthetic.yaml",
        ["method.pedal=false"], init_row="paul_pretrain"),
    Row("paul_pedal_only", "paul, + PEDAL only (w/o IPFL)", "paul_synthetic.yaml",
        ["method.ipfl=false"], init_row="paul_pretrain"),
    Row("paul_pretrain_stripes", "paul, pre-training only, fixed equal stripes",
        "paul_pretrain_synthetic.yaml", ["method.generator_lr_mult=0"], reference=True),
    Row("paul_stripes", "paul, full, fixed equal stripes", "paul_synthetic.yaml",
        init_row="paul_pretrain_stripes"),
    Row("paul_pretrain_random", "paul, pre-training only, fixed random patches",
        "paul_pretrain_synthetic.yaml",
        ["model.kwargs.patch_init=random", "method.generator_lr_mult=0"], reference=True),
    Row("paul_random", "paul, full, fixed random patches", "paul_synthetic.yaml",
        ["model.kwargs.patch_init=random"], init_row="paul_pretrain_random"),
    Row("paul_pretrain_p4", "paul, pre-training only, 4 patches", "paul_pretrain_synthetic.yaml",
        ["model.kwargs.num_patches=4"], reference=True),
    Row("paul_p4", "paul, full, 4 patches", "paul_synthetic.yaml",
        ["model.kwargs.num_patches=4"], init_row="paul_pretrain_p4"),
    Row("paul_pretrain_p8", "paul, pre-training only, 8 patches", "paul_pretrain_synthetic.yaml",
        ["model.kwargs.num_patches=8"], reference=True),
    Row("paul_p8", "paul, full, 8 patches", "paul_synthetic.yaml",
        ["model.kwargs.num_patches=8"], init_row="paul_pretrain_p8"),
]  # fmt: skip
ROWS_BY_NAME = {row.name: row for row in ROWS}


def ensure_data(data_dir: Path, data_seed: int) -> str:
    """Generate the synthetic split of ``data_seed`` once; its ``--data`` spec."""
    if not (data_dir / "meta.json").is_file():
        cmd = [sys.executable, "-m", "reid.data.synthetic", str(data_dir), *DATA_SIZE,
               "--seed", str(data_seed), "--force"]  # fmt: skip
        subprocess.run(cmd, cwd=REPO, check=True)
    return f"synthetic:{data_dir}"


def ensure_reference(ref_dir: Path) -> str:
    """Generate the synthetic reference set (MAR, PAUL) once; its ``--reference`` spec."""
    if not (ref_dir / "meta.json").is_file():
        cmd = [sys.executable, "-m", "reid.data.synthetic", str(ref_dir), *REFERENCE_ARGS,
               "--force"]  # fmt: skip
        subprocess.run(cmd, cwd=REPO, check=True)
    return f"synthetic:{ref_dir}"


def ensure_vtest_set(data_dir: Path, split_seed: int) -> str:
    """Cut ``vtest.avi`` into a re-ID set once (``python -m gallery dataset``); its spec."""
    if not (data_dir / "meta.json").is_file():
        from gallery.ingest.sample_video import fetch_vtest

        if data_dir.exists():
            shutil.rmtree(data_dir)  # an interrupted cut: start again
        cmd = [sys.executable, "-m", "gallery", "dataset", str(fetch_vtest()), "--out",
               str(data_dir), "--seed", str(split_seed)]  # fmt: skip
        subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return f"market1501:{data_dir}"


SCORES_NOTE = (
    "Scores in %, no re-ranking; std is the sample standard deviation over the runs. The "
    "mAP and rank-1 columns score the last checkpoint; the last column scores the model "
    "the trainer chose without labels (`model_selected.pt`: the best label-free cluster "
    "quality among the start and every second epoch) and lists the epoch it chose in each "
    "run (0 = it kept the starting model)."
)


def vtest_description(data_dir: Path) -> str:
    meta = json.loads((data_dir / "meta.json").read_text())
    ids, images, noise = meta["identities"], meta["images"], meta["label_noise"]
    return (
        "Data: `python -m gallery dataset vtest.avi --out DIR --seed D` (D = split seed; "
        f"{meta['frames']} frames at {meta['settings']['fps']:g} fps, "
        f"{meta['settings']['cameras']} pseudo-cameras): {ids['train']} train identities "
        f"({images['train']} crops), {ids['test']} test identities, {images['query']} "
        f"queries x {images['gallery']} gallery crops. Labels are tracker ids: "
        f"{noise['tracks_starting_inside']} of {noise['tracks_kept']} tracks start inside "
        "the frame mid-video (broken tracks split a person; docs/RESULTS.md). " + SCORES_NOTE
    )


def train_command(
    row: Row,
    spec: str,
    run_dir: Path,
    seed: int,
    extra: list[str],
    reference: str | None = None,
    init: Path | None = None,
) -> list[str]:
    # eval.every=0: in-training evaluation changes nothing but the time (scored after).
    streams = ["--reference", reference] if row.reference and reference else []
    if init is not None:
        streams += ["--init", str(init)]
    return [
        sys.executable, "-m", "trainer", "train",
        "--config", f"trainer/configs/{row.config}", "--data", spec, *streams,
        "--out", str(run_dir),
        "train.progress=false", "eval.every=0", f"train.seed={seed}", *row.overrides, *extra,
    ]  # fmt: skip


def eval_command(row: Row, spec: str, run_dir: Path, checkpoint: Path | None = None) -> list[str]:
    source = (
        ["--model", row.model, "--model-kwargs", PRETRAINED]
        if row.model
        else ["--checkpoint", str(checkpoint or run_dir / "checkpoint_last.pt")]
    )
    return [sys.executable, "-m", "trainer", "eval", *source, "--data", spec, "--json",
            *row.eval_args]  # fmt: skip


def run_one(
    row: Row,
    spec: str,
    run_dir: Path,
    seed: int,
    extra: list[str],
    reference: str | None = None,
    init: Path | None = None,
) -> dict:
    """One (row, data seed, train seed) run, or its saved result.

    A row with ``scores_run_of`` scores that row's finished run (``run_dir`` is that
    row's folder) and keeps its result in ``result_<name>.json`` beside it. ``reference``
    is the ``--reference`` spec of rows that train with one, ``init`` the checkpoint a
    row with ``init_row`` starts from.
    """
    if row.reference and not reference:
        raise SystemExit(f"row {row.name} trains with a reference set: pass its spec")
    if row.init_row and (init is None or not init.is_file()):
        raise SystemExit(f"row {row.name} starts from a run of row {row.init_row}: {init} missing")
    result_path = run_dir / (f"result_{row.name}.json" if row.scores_run_of else "result.json")
    changed = None if row.scores_run_of else stale_settings(row, run_dir, seed, extra)
    if changed:
        aside = run_dir.with_name(run_dir.name + ".stale")
        print(f"  {row.name} seed {seed}: its config changed ({changed}); the old run is "
              f"moved to {aside} and trained again", flush=True)  # fmt: skip
        shutil.rmtree(aside, ignore_errors=True)
        run_dir.rename(aside)
    if result_path.is_file():
        result = json.loads(result_path.read_text())
        if "selected" not in result:  # finished before the label-free choice was scored
            result["selected"] = score_selected(row, spec, run_dir)
            result_path.write_text(json.dumps(result, indent=2))
        return result
    if row.scores_run_of and not (run_dir / "result.json").is_file():
        raise SystemExit(
            f"row {row.name} scores the run of row {row.scores_run_of}, which has not "
            f"finished in {run_dir}: run both (--rows {row.scores_run_of} {row.name})"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    train_seconds = 0.0
    commands = []
    if row.scores_run_of:
        trained = json.loads((run_dir / "result.json").read_text())
        train_seconds, commands = trained["train_seconds"], [trained["commands"][0]]
    elif row.config:
        # a run stopped part-way continues from its last checkpoint (exactly: --resume
        # restores the model, optimiser, method state and random streams; --init was
        # taken when it started)
        resume = (run_dir / "checkpoint_last.pt").is_file()
        cmd = train_command(row, spec, run_dir, seed, extra, reference, None if resume else init)
        cmd += ["--resume"] if resume else []
        commands.append(cmd)
        print("$ " + shlex.join(cmd), flush=True)
        start = time.perf_counter()
        with open(run_dir / "stdout.log", "a" if resume else "w") as log:
            subprocess.run(cmd, cwd=REPO, check=True, stdout=log, stderr=subprocess.STDOUT)
        train_seconds = time.perf_counter() - start
    cmd = eval_command(row, spec, run_dir)
    commands.append(cmd)
    scores = json.loads(subprocess.run(cmd, cwd=REPO, check=True, capture_output=True).stdout)
    commands = [c if isinstance(c, str) else shlex.join(c) for c in commands]
    result = {"row": row.name, "seed": seed, "train_seconds": train_seconds, "scores": scores,
              "selected": score_selected(row, spec, run_dir), "commands": commands}  # fmt: skip
    result_path.write_text(json.dumps(result, indent=2))
    print(f"  {row.name} seed {seed}: mAP {100 * scores['mAP']:.1f}", flush=True)
    return result


_RUN_SPECIFIC = ("data.spec", "reference.spec", "train.init")
"""Settings that name this run's inputs, not the recipe."""


def stale_settings(row: Row, run_dir: Path, seed: int, extra: list[str]) -> str | None:
    """The settings in which ``run_dir``'s saved config differs from what the row trains
    today (its config file and overrides), or ``None`` (same, or nothing saved)."""
    saved = run_dir / "config.yaml"
    if not row.config or not saved.is_file():
        return None
    from trainer.config import load_config

    overrides = ["train.progress=false", "eval.every=0", f"train.seed={seed}",
                 *row.overrides, *extra]  # fmt: skip
    now = _flat(load_config(REPO / "trainer" / "configs" / row.config, overrides).to_dict())
    then = _flat(load_config(saved).to_dict())
    changed = [
        f"{key}: {then.get(key)!r} -> {now.get(key)!r}"
        for key in sorted(now.keys() | then.keys())
        if key not in _RUN_SPECIFIC and now.get(key) != then.get(key)
    ]
    return "; ".join(changed) or None


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def score_selected(row: Row, spec: str, run_dir: Path) -> dict | None:
    """Scores of the trainer's label-free choice (``model_selected.pt``), with the epoch
    it chose (0: the starting model); ``None`` for a run without one."""
    selected = run_dir / "model_selected.pt"
    if row.model or not selected.is_file():
        return None
    cmd = eval_command(row, spec, run_dir, checkpoint=selected)
    scores = json.loads(subprocess.run(cmd, cwd=REPO, check=True, capture_output=True).stdout)
    log = run_dir / "selection.json"
    epoch = json.loads(log.read_text())["selected"]["epoch"] if log.is_file() else None
    return {"scores": scores, "epoch": epoch}


def summarise(values: list[float]) -> dict[str, float]:
    """mean, sample std (0 for one value), min, max of percentages."""
    pct = [100 * v for v in values]
    std = statistics.stdev(pct) if len(pct) > 1 else 0.0
    return {"mean": statistics.fmean(pct), "std": std, "min": min(pct), "max": max(pct)}


def cell(s: dict[str, float], runs: int) -> str:
    if runs == 1:
        return f"{s['mean']:.1f} (one run)"
    return f"{s['mean']:.1f} ± {s['std']:.1f} ({s['min']:.1f}-{s['max']:.1f})"


def relative(command: str) -> str:
    return command.replace(sys.executable, "python").replace(str(REPO) + "/", "")


def table(groups: list[tuple[Row, int, list[dict]]], seed_name: str = "data seed") -> str:
    """The results table; the last column scores the trainer's label-free checkpoint
    choice (``model_selected.pt``) and says which epochs it took (0 = the start)."""
    lines = [
        f"| method | {seed_name} | runs | mAP mean ± std (min-max) | rank-1 mean ± std (min-max) "
        "| training time / run | label-free choice: mAP (epochs chosen) |",
        "|---|---:|---:|---|---|---:|---|",
    ]
    for row, data_seed, runs in groups:
        m = summarise([r["scores"]["mAP"] for r in runs])
        r1 = summarise([r["scores"]["rank1"] for r in runs])
        seconds = [r["train_seconds"] for r in runs if r["train_seconds"]]
        minutes = f"{statistics.fmean(seconds) / 60:.1f} min" if seconds else "-"
        lines.append(
            f"| {row.label} | {data_seed} | {len(runs)} | {cell(m, len(runs))} | "
            f"{cell(r1, len(runs))} | {minutes} | {selected_cell(runs)} |"
        )
    return "\n".join(lines)


def selected_cell(runs: list[dict]) -> str:
    chosen = [r["selected"] for r in runs if r.get("selected")]
    if not chosen:
        return "-"
    s = summarise([c["scores"]["mAP"] for c in chosen])
    epochs = ", ".join(str(c["epoch"]) for c in chosen)
    return f"{cell(s, len(chosen))} ({epochs})"


def perturbation(groups: list[tuple[Row, int, list[dict]]]) -> str:
    """Same seed, 2 threads vs 1: the per-seed mAP differences of the demo row."""
    by_name = {(row.name, d): runs for row, d, runs in groups}
    base, one = by_name.get(("aff_scl_both", 0)), by_name.get(("aff_scl_both_threads1", 0))
    if not base or not one:
        return ""
    one_by_seed = {r["seed"]: r for r in one}
    diffs = [
        (r["seed"], 100 * r["scores"]["mAP"], 100 * one_by_seed[r["seed"]]["scores"]["mAP"])
        for r in base
        if r["seed"] in one_by_seed
    ]
    parts = ", ".join(f"seed {s}: {a:.1f} vs {b:.1f}" for s, a, b in diffs)
    gaps = [abs(a - b) for _, a, b in diffs]
    return (
        f"Perturbation (same seed, `train.threads` 2 vs 1, data seed 0, aff_scl both): {parts}; "
        f"mean |difference| {statistics.fmean(gaps):.1f} mAP points."
        if gaps
        else ""
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "results")
    parser.add_argument("--rows", nargs="*", help="subset of row names (default all)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="train seeds")
    parser.add_argument(
        "--data-seeds", nargs="+", type=int,
        help="synthetic data seeds (default 0 2; rows other than the main ones run on the "
        "first only), or vtest split seeds (default 0)",
    )  # fmt: skip
    parser.add_argument(
        "--dataset", choices=("synthetic", "vtest"), default="synthetic",
        help="the synthetic set, or real crops cut from vtest.avi (main rows unless --rows)",
    )  # fmt: skip
    parser.add_argument("--override", nargs="*", default=[], help="KEY=VALUE for trained rows")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    real = args.dataset == "vtest"
    if args.data_seeds is None:
        args.data_seeds = [0] if real else list(TEST_DATA_SEEDS)
    # by default every row (synthetic) or the main ones (real crops); named rows run on either
    rows = (
        [r for r in ROWS if r.name in args.rows]
        if args.rows
        else [r for r in ROWS if r.main or not real]
    )
    unknown = set(args.rows or ()) - {r.name for r in ROWS}
    if unknown:
        parser.error(f"unknown rows {sorted(unknown)}; rows: {', '.join(r.name for r in ROWS)}")
    groups: list[tuple[Row, int, list[dict]]] = []
    needs_reference = any(
        r.reference or (r.init_row and ROWS_BY_NAME[r.init_row].reference) for r in rows
    )
    reference = ensure_reference(args.out / "reference") if needs_reference else None
    for index, data_seed in enumerate(args.data_seeds):
        folder_name = f"vtest{data_seed}" if real else f"data{data_seed}"
        if real:
            spec = ensure_vtest_set(args.out / folder_name, data_seed)
        else:
            spec = ensure_data(args.out / folder_name, data_seed)
        for row in rows:
            if index > 0 and not row.main:
                continue
            seeds = [args.seeds[0]] if row.model else args.seeds  # untrained: deterministic
            folder = args.out / folder_name / (row.scores_run_of or row.name)
            runs = []
            for seed in seeds:
                init = None
                if row.init_row:  # the run it starts from, trained first when missing
                    first = ROWS_BY_NAME[row.init_row]
                    init_dir = args.out / folder_name / first.name / f"seed{seed}"
                    run_one(first, spec, init_dir, seed, args.override, reference)
                    init = init_dir / "checkpoint_last.pt"
                runs.append(
                    run_one(row, spec, folder / f"seed{seed}", seed, args.override, reference, init)
                )
            groups.append((row, data_seed, runs))
    commands = "\n".join(
        f"- {row.label}: "
        + "; ".join(f"`{relative(c)}`" for c in runs[0]["commands"])
        + (" (and `train.seed=` each seed)" if row.config else "")
        for row, data_seed, runs in groups
        if data_seed == args.data_seeds[0]
    )
    seeds = " ".join(str(s) for s in args.seeds)
    if real:
        data = vtest_description(args.out / f"vtest{args.data_seeds[0]}")
    else:
        data = (
            "Data: `python -m reid.data.synthetic DIR " + " ".join(DATA_SIZE) + " --seed D` "
            "(D = data seed; seed 0: 150 train identities, 2,243 images; 253 queries x 1,457 "
            "gallery; 6 cameras; 128x64; difficulty 2). " + SCORES_NOTE
        )
    reference_note = (
        "MAR and PAUL rows: they also learn from a labelled reference set, the stand-in "
        "for MSMT17 (`python -m reid.data.synthetic REF " + " ".join(REFERENCE_ARGS) + "`: "
        "300 other identities, 8 cameras, difficulty 1.5), extra supervision the other "
        "rows do not get; the rows marked pre-trained (every PAUL row after its "
        "pre-training rows) start from the reference pre-training row of the same seed "
        "and encoder (`--init`), whose time is not included."
    )
    body = "\n".join(
        [
            "Command: `.venv/bin/python scripts/results_synthetic.py"
            + (" --dataset vtest" if real else "")
            + f"` (all rows below; train seeds {seeds}; resumable).",
            f"Machine: {machine_summary()}.",
            data,
            *([reference_note] if any(r.reference or r.init_row for r, _, _ in groups) else []),
            "",
            table(groups, "split seed" if real else "data seed"),
            "",
            perturbation(groups),
            "",
            f"Per-row commands ({'split' if real else 'data'} seed {args.data_seeds[0]} shown):",
            "",
            commands,
        ]
    )
    print(body)
    if not args.no_write and not args.rows and not args.override:
        section = REAL_SECTION if real else SYNTHETIC_SECTION
        update_section(REPO / "docs" / "RESULTS.md", section, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
