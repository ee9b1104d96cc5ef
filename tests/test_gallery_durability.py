"""SIGKILL during a stream of adds: every acknowledged batch survives, nothing half-written.

A child process adds deterministic batches (vectors, metadata, thumbnails derived from
the batch number) and prints each batch's ids after ``add`` returns. The parent kills
it with SIGKILL after a number of acknowledgements, while it is still adding, then
reopens the gallery and checks it against what was acknowledged.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from reid.gallery import EntryMetadata, Gallery

DIM = 16
REPO = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, sys.argv[2])
    from tests.test_gallery_durability import DIM, batch
    from reid.gallery import Gallery

    with Gallery.open(sys.argv[1], dim=DIM, index="flat") as gallery:
        number = 0
        while True:
            vectors, metadata, thumbnails = batch(number)
            ids = gallery.add(vectors, metadata, thumbnails)
            print(json.dumps({"batch": number, "ids": ids.tolist()}), flush=True)
            number += 1
    """
)


def batch(number: int) -> tuple[np.ndarray, list[EntryMetadata], list[bytes | None]]:
    """Batch ``number``: 1 to 8 entries, every other one with a ~20 KB thumbnail."""
    rng = np.random.default_rng(number)
    size = int(rng.integers(1, 9))
    vectors = rng.normal(size=(size, DIM)).astype(np.float32)
    metadata = [
        EntryMetadata(
            camera=number % 5,
            timestamp=number + j / 10,
            track=number,
            box=(j, j + 1.5, 20.0, 40.0),
            source=f"batch-{number}",
            extra={"batch": number, "j": j},
        )
        for j in range(size)
    ]
    thumbnails = [thumbnail(number, j) if j % 2 == 0 else None for j in range(size)]
    return vectors, metadata, thumbnails


def thumbnail(number: int, j: int) -> bytes:
    return b"\xff\xd8" + f"{number}:{j};".encode() * 2000


def run_and_kill(directory: Path, acks_before_kill: int) -> list[dict]:
    """Start the child, read ``acks_before_kill`` acknowledgements, SIGKILL it."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(directory), str(REPO)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    acks = []
    try:
        for line in child.stdout:
            acks.append(json.loads(line))
            if len(acks) == acks_before_kill:
                break
        assert len(acks) == acks_before_kill, child.stderr.read()
        assert child.poll() is None, "the child must still be adding when it is killed"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=30)
    # Lines written after our last read but before the kill were acknowledged too.
    acks.extend(json.loads(line) for line in child.stdout.read().splitlines() if line.strip())
    child.stdout.close()
    child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    return acks


@pytest.mark.parametrize("acks_before_kill", [1, 7, 25])
def test_acknowledged_adds_survive_sigkill_and_batches_are_all_or_nothing(
    tmp_path, acks_before_kill
):
    directory = tmp_path / "gallery"
    acks = run_and_kill(directory, acks_before_kill)
    acked_ids = [i for ack in acks for i in ack["ids"]]
    in_flight = len(batch(len(acks))[0])  # the batch the child was adding when killed

    with Gallery.open(directory) as gallery:
        size = len(gallery)
        assert size in (len(acked_ids), len(acked_ids) + in_flight)
        for ack in acks:
            vectors, metadata, thumbnails = batch(ack["batch"])
            entries = gallery.get(ack["ids"])
            assert [e.metadata for e in entries] == metadata
            for entry_id, vector, data in zip(ack["ids"], vectors, thumbnails, strict=True):
                best = gallery.search(vector, k=1)[0][0]
                assert best.id == entry_id and best.score == pytest.approx(1.0, abs=1e-5)
                path = gallery.thumbnail_path(entry_id)
                assert (path is None) == (data is None)
                assert path is None or path.read_bytes() == data
        # Every row, acknowledged or not, is whole: its thumbnail exists and matches.
        every = gallery.search(np.ones((1, DIM)), k=None)[0]
        assert len(every) == size
        for match in every:
            number, j = match.metadata.extra["batch"], match.metadata.extra["j"]
            assert number <= len(acks)
            path = gallery.thumbnail_path(match.id)
            assert path is None or path.read_bytes() == thumbnail(number, j)
        # No file is left without its row.
        files = [p for p in (directory / "thumbnails").rglob("*") if p.is_file()]
        assert len(files) == gallery.stats()["with_thumbnails"]
        # The gallery keeps working: new ids follow every id ever committed.
        (new_id,) = gallery.add(batch(1000)[0][:1], batch(1000)[1][:1])
        assert new_id > max([*acked_ids, *(m.id for m in every)])
