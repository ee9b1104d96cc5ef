"""Reproduce the method comparison of docs/RESULTS.md on the synthetic dataset.

Every row trains on the same data with the same budget (the ``*_synthetic.yaml``
configs: 6 epochs x 30 iterations, batch 64, 128x64, pretrained MobileNetV2 unless the
row says otherwise) and is scored on the query/gallery split with the **last**
checkpoint (never the best-on-test one, so nothing is tuned on the test split).

    .venv/bin/python scripts/results_synthetic.py [--out runs/results] [--rows NAME ...]

Rows already finished in ``--out`` are reused (delete a row's folder to rerun it).
The table is printed and written into docs/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from _report import machine_summary, update_section  # noqa: E402

DATA_ARGS = ["--ids-train", "150", "--ids-test", "100", "--cameras", "6", "--seed", "0"]
PRETRAINED = '{"pretrained": "imagenet", "input_size": [128, 64]}'


@dataclass(frozen=True)
class Row:
    name: str
    label: str
    config: str | None = None
    overrides: list[str] = field(default_factory=list)
    model: str | None = None
    """For direct-transfer rows: evaluate this untrained encoder instead of training."""


ROWS = [
    Row("direct_transfer", "direct transfer (ImageNet MobileNetV2, no training)",
        model="mobilenetv2"),
    Row("cluster_contrast", "cluster_contrast", "cluster_contrast_synthetic.yaml"),
    Row("cluster_contrast_random_init", "cluster_contrast, random init",
        "cluster_contrast_synthetic.yaml", ["model.kwargs.pretrained=null"]),
    Row("aff_scl_mean", "aff_scl, mean memory only", "aff_scl_synthetic.yaml",
        ["method.memories=mean"]),
    Row("aff_scl_hard", "aff_scl, hard memory only", "aff_scl_synthetic.yaml",
        ["method.memories=hard"]),
    Row("aff_scl_both", "aff_scl, both memories (paper)", "aff_scl_synthetic.yaml",
        ["method.memories=both"]),
    Row("frifm_adl_neither", "frifm_adl, neither (plain encoder, no ADL)",
        "frifm_adl_synthetic.yaml", ["model.name=mobilenetv2", "method.adl=false"]),
    Row("frifm_adl_frifm", "frifm_adl, FRIFM only", "frifm_adl_synthetic.yaml",
        ["model.name=frifm_mobilenetv2", "method.adl=false"]),
    Row("frifm_adl_adl", "frifm_adl, ADL only", "frifm_adl_synthetic.yaml",
        ["model.name=mobilenetv2", "method.adl=true"]),
    Row("frifm_adl_both", "frifm_adl, FRIFM + ADL (paper)", "frifm_adl_synthetic.yaml",
        ["model.name=frifm_mobilenetv2", "method.adl=true"]),
    Row("supervised", "supervised upper bound (true labels)", "supervised_synthetic.yaml"),
]  # fmt: skip


def ensure_data(data_dir: Path) -> str:
    if not (data_dir / "meta.json").is_file():
        cmd = [sys.executable, "-m", "reid.data.synthetic", str(data_dir), *DATA_ARGS, "--force"]
        subprocess.run(cmd, cwd=REPO, check=True)
    return f"synthetic:{data_dir}"


def train_command(row: Row, spec: str, run_dir: Path) -> list[str]:
    return [
        sys.executable, "-m", "trainer", "train",
        "--config", f"trainer/configs/{row.config}", "--data", spec, "--out", str(run_dir),
        "train.progress=false", *row.overrides,
    ]  # fmt: skip


def eval_command(row: Row, spec: str, run_dir: Path) -> list[str]:
    source = (
        ["--model", row.model, "--model-kwargs", PRETRAINED]
        if row.model
        else ["--checkpoint", str(run_dir / "checkpoint_last.pt")]
    )
    return [sys.executable, "-m", "trainer", "eval", *source, "--data", spec, "--json"]


def run_row(row: Row, spec: str, out: Path) -> dict:
    run_dir = out / row.name
    result_path = run_dir / "result.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    train_seconds = 0.0
    commands = []
    if row.config:
        cmd = train_command(row, spec, run_dir)
        commands.append(cmd)
        print("$ " + shlex.join(cmd), flush=True)
        start = time.perf_counter()
        with open(run_dir / "stdout.log", "w") as log:
            subprocess.run(cmd, cwd=REPO, check=True, stdout=log, stderr=subprocess.STDOUT)
        train_seconds = time.perf_counter() - start
    cmd = eval_command(row, spec, run_dir)
    commands.append(cmd)
    print("$ " + shlex.join(cmd), flush=True)
    scores = json.loads(subprocess.run(cmd, cwd=REPO, check=True, capture_output=True).stdout)
    result = {"row": row.name, "label": row.label, "train_seconds": train_seconds,
              "scores": scores, "commands": [shlex.join(c) for c in commands]}  # fmt: skip
    result_path.write_text(json.dumps(result, indent=2))
    return result


def relative(command: str) -> str:
    return command.replace(sys.executable, "python").replace(str(REPO) + "/", "")


def table(results: list[dict]) -> str:
    supervised = next((r for r in results if r["row"] == "supervised"), None)
    lines = [
        "| method | mAP | rank-1 | rank-5 | training time | mAP / supervised |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        s = r["scores"]
        ratio = f"{s['mAP'] / supervised['scores']['mAP']:.2f}" if supervised else "-"
        minutes = f"{r['train_seconds'] / 60:.1f} min" if r["train_seconds"] else "-"
        lines.append(
            f"| {r['label']} | {100 * s['mAP']:.1f} | {100 * s['rank1']:.1f} | "
            f"{100 * s['rank5']:.1f} | {minutes} | {ratio} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "results")
    parser.add_argument("--rows", nargs="*", help="subset of row names (default all)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    spec = ensure_data(args.out / "data")
    rows = [r for r in ROWS if not args.rows or r.name in args.rows]
    results = [run_row(row, spec, args.out) for row in rows]
    commands = "\n".join(
        f"- {r['label']}: " + "; ".join(f"`{relative(c)}`" for c in r["commands"]) for r in results
    )
    body = "\n".join(
        [
            "Command: `.venv/bin/python scripts/results_synthetic.py` (all rows below).",
            f"Machine: {machine_summary()}.",
            "Data: `python -m reid.data.synthetic DIR " + " ".join(DATA_ARGS) + "` "
            "(150 train identities, 2,243 images; 253 queries x 1,457 gallery; 6 cameras; "
            "128x64; difficulty 2). Scores in %, last checkpoint, no re-ranking.",
            "",
            table(results),
            "",
            "Per-row commands:",
            "",
            commands,
        ]
    )
    print(body)
    if not args.no_write and not args.rows:
        update_section(REPO / "docs" / "RESULTS.md", "## Synthetic dataset: method comparison",
                       body)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
