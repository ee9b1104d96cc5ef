"""bench/bench_triton.py's report: cells are medians over rounds, ratios per round."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
import bench_triton  # noqa: E402


def _args(rounds: int) -> argparse.Namespace:
    return argparse.Namespace(
        encoder="mobilenetv2", size="128x64", threads=1, instances=2, seconds=10.0,
        baseline=None, baseline_label="", rounds=rounds, connections=[1, 8],
    )  # fmt: skip


def _cell(rps: float) -> dict[str, float]:
    return {"rps": rps, "p50": 1000 / rps, "p99": 2000 / rps, "errors": 0}


def test_three_rounds_report_the_median_cell_and_each_rounds_ratio() -> None:
    ours, triton = [100.0, 300.0, 200.0], [200.0, 200.0, 200.0]
    rows = []
    for o, t in zip(ours, triton, strict=True):
        for connections in (1, 8):
            rows += [("ours", connections, _cell(o)), ("triton", connections, _cell(t))]
    text = bench_triton.report(rows, _args(3), elapsed=60.0)
    assert "| ours | 1 | 200.0 | 5.0 | 10.0 | 0 |" in text
    assert "| triton | 8 | 200.0 | 5.0 | 10.0 | 0 |" in text
    assert "Ours / Triton median (rounds) by connections: 1: 1.00 (0.50 / 1.50 / 1.00)" in text
    assert "the median over 3 rounds" in text


def test_one_round_reports_the_cells_as_measured() -> None:
    rows = [("ours", c, _cell(150.0)) for c in (1, 8)] + [
        ("triton", c, _cell(100.0)) for c in (1, 8)
    ]
    text = bench_triton.report(rows, _args(1), elapsed=30.0)
    assert "Ours / Triton throughput by connections: 1: 1.50, 8: 1.50." in text
    assert "rounds" not in text
    assert text.count("| ours |") == 2 and "\n\n\n" not in text
