"""bench/bench_gallery.py: the --quick smoke run and the report's subsections."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from _report import update_section  # noqa: E402


def test_quick_run_prints_a_row_per_kind_and_operating_point(tmp_path):
    env = {**os.environ, "REID_MILVUS_LITE_PYTHON": str(tmp_path / "no-such-python")}
    done = subprocess.run(
        [sys.executable, "bench/bench_gallery.py", "--quick", "--backend", "faiss,milvus-lite"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| 10,000 | 128 |")]
    kinds = [row.split("|")[4].strip() for row in rows]
    assert kinds.count("flat") == 2  # unfiltered and filtered
    assert kinds.count("ivf") == kinds.count("hnsw") == 4
    assert kinds.count("ivf_sq8") == 8  # each point also re-ranked from SQLite
    assert sum("camera in [0, 1]" in row for row in rows) == 5
    recalls = [float(row.split("|")[-2]) for row in rows]
    assert min(recalls) >= 0.9
    cells = [[cell.strip() for cell in row.split("|")] for row in rows if "sq8" in row]
    sq8 = {(c[5], c[6]): float(c[-2]) for c in cells}  # (parameters, filter) -> recall
    for (params, filtered), recall in sq8.items():
        if "re-rank" not in params:
            assert sq8[f"{params}, re-rank 4x from SQLite", filtered] >= recall
    assert "milvus-lite: absent (no milvus-lite environment" in done.stdout
    assert "not written" in done.stdout


def test_a_new_subsection_goes_to_the_end_of_its_parent(tmp_path):
    path = tmp_path / "B.md"
    path.write_text("# Benchmarks\n\n## A\n\nintro\n\n### old\n\nx\n\n## B\n\nb\n")
    update_section(path, "### new", "y", parent="## A")
    update_section(path, "### old", "x2", parent="## A")
    assert path.read_text() == (
        "# Benchmarks\n\n## A\n\nintro\n\n### old\n\nx2\n\n### new\n\ny\n\n## B\n\nb\n"
    )


SMALL_RUN = [
    "--sizes", "2000,400000", "--dims", "64", "--kinds", "flat,ivf,ivf_sq8",
    "--queries", "20", "--batch1", "5", "--ingest", "0", "--title", "Small run",
]  # fmt: skip


def _table_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("| 2,000 | 64 |")]


def test_a_finished_run_writes_its_rows_and_no_progress_mark(tmp_path):
    output = tmp_path / "BENCHMARKS.md"
    done = subprocess.run(
        [sys.executable, "bench/bench_gallery.py", *SMALL_RUN[:1], "2000", *SMALL_RUN[2:],
         "--output", str(output)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = output.read_text()
    assert "### Small run" in text and "Whole run:" in text
    assert "in progress" not in text and "Run stopped" not in text
    assert len(_table_rows(text)) == len(_table_rows(done.stdout)) > 0


def test_a_stopped_run_keeps_the_rows_it_finished_and_says_where_it_stopped(tmp_path):
    output = tmp_path / "BENCHMARKS.md"
    process = subprocess.Popen(
        [sys.executable, "bench/bench_gallery.py", *SMALL_RUN, "--output", str(output)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    watchdog = threading.Timer(240, process.kill)  # a run that hangs fails, never hangs us
    watchdog.start()
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("| 2,000 | 64 | faiss | ivf |"):
                break  # flat's rows and one IVF row are in: the file holds them already
        assert "Run in progress" in output.read_text()
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=120)
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130
    text = output.read_text()
    assert "**Run stopped after" in text
    assert "during 2,000 x 64" in text or "during 400,000 x 64" in text
    assert "Whole run:" not in text and "So far:" in text
    rows = _table_rows(text)
    assert sum("| flat |" in row for row in rows) == 2 and any("| ivf |" in r for r in rows)
    assert "rows so far kept" in rest


class _FakeProcess:
    """A stand-in for the milvus-lite subprocess: ``poll`` says it ended once told to."""

    def __init__(self) -> None:
        self.ended = False

    def poll(self) -> int | None:
        return 0 if self.ended else None


def test_follow_yields_complete_lines_as_they_come_and_the_rest_after_the_end(tmp_path):
    from bench_gallery import _follow

    path, process = tmp_path / "out.jsonl", _FakeProcess()
    path.write_text('{"a": 1}\n{"b": ')
    lines = _follow(path, process)
    assert next(lines) == '{"a": 1}'  # the half-written line is held back
    with open(path, "a") as handle:
        handle.write('2}\n{"c": 3}\n')
    process.ended = True
    assert list(lines) == ['{"b": 2}', '{"c": 3}']


def test_follow_of_a_process_that_ended_without_writing_yields_nothing(tmp_path):
    from bench_gallery import _follow

    process = _FakeProcess()
    process.ended = True
    assert list(_follow(tmp_path / "never-written.jsonl", process)) == []
