"""Served-path evaluation (``python -m gallery evaluate``) equals the offline evaluation.

The served side runs through the real HTTP app and search service (``server.http``,
``server.service``, ``gallery.Gallery``) in process, with a small deterministic runtime
standing in for an exported model; the offline reference embeds the same files with the
same runtime. Unit tests run the harness against an in-memory backend that answers
with the API's own models (``reid_client.schemas``); one slow test runs the real
``python -m server`` and ``python -m gallery evaluate`` processes, queries over gRPC.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from gallery.cli import main
from gallery.evaluate import (
    TOLERANCE,
    evaluate_served,
    gallery_metadata,
    offline_results,
)
from gallery.report import write_report
from reid.data import load_dataset
from reid.data.base import label_arrays
from reid.manifest import ExportManifest
from reid.metrics import evaluate_features, evaluate_rank, truncate_distmat
from reid.preprocess import PreprocessConfig, decode_image_bytes, preprocess_batch
from reid.runtimes import Runtime
from reid_client import ReIDClient, ServerUnreachableError
from reid_client import schemas as s

REPO = Path(__file__).resolve().parents[1]

DIM = 24


class PoolRuntime(Runtime):
    """Stand-in export: 8x8 average pooling -> fixed projection -> L2-normalised ``[N, 24]``."""

    name = "pool-fake"

    def __init__(self) -> None:
        manifest = ExportManifest(
            model_name="pool-fake",
            embedding_dim=DIM,
            preprocess=PreprocessConfig(height=64, width=32),
            files={},
        )
        super().__init__(manifest, device="cpu")
        self.projection = np.random.default_rng(0).standard_normal((96, DIM))

    def _embed(self, images: np.ndarray) -> np.ndarray:
        n = len(images)
        pooled = images.astype(np.float64).reshape(n, 3, 8, 8, 4, 8).mean(axis=(3, 5))
        out = pooled.reshape(n, -1) @ self.projection
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


class MemoryBackend:
    """In-memory search backend with the API's semantics (cosine, best first, ties by id)."""

    def __init__(self, runtime: Runtime, ignore_full_ranking: bool = False) -> None:
        self.runtime = runtime
        self.ignore_full_ranking = ignore_full_ranking
        self.vectors: dict[int, np.ndarray] = {}
        self.metadata: dict[int, dict] = {}
        self.next_id = 100

    def _embed(self, images: Sequence[bytes]) -> np.ndarray:
        decoded = [decode_image_bytes(b) for b in images]
        return self.runtime.embed(preprocess_batch(decoded, self.runtime.manifest.preprocess))

    def add(self, images, metadata):
        ids = []
        for vector, meta in zip(self._embed(images), metadata, strict=True):
            self.vectors[self.next_id], self.metadata[self.next_id] = vector, meta
            ids.append(self.next_id)
            self.next_id += 1
        return ids

    def delete(self, ids):
        for i in ids:
            del self.vectors[i], self.metadata[i]
        return s.DeleteManyResponse(deleted=list(ids), missing=[])

    def search(self, images, params: s.SearchParams) -> s.SearchResponse:
        ids = list(self.vectors)
        matrix = np.stack([self.vectors[i] for i in ids])
        full = params.full_ranking and not self.ignore_full_ranking
        depth = len(ids) if full else params.k
        results = []
        for index, scores in enumerate(self._embed(images) @ matrix.T):
            order = np.argsort(-scores, kind="stable")[:depth]
            matches = [s.MatchOut(id=ids[j], score=float(scores[j])) for j in order]
            results.append(s.QueryResult(query_index=index, matches=matches))
        return s.SearchResponse(results=results, gallery_size=len(ids), took_ms=0.0)


def evaluate_returned(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=50):
    """The metrics of a top-k ranking (not returned = ``inf`` = not retrieved)."""
    return evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams, max_rank, inf_is_missed=True)


def reference(dataset, runtime: Runtime):
    """Offline result computed here directly with reid.metrics (not through the harness)."""
    config = runtime.manifest.preprocess

    def feats(records):
        return runtime.embed(
            preprocess_batch([decode_image_bytes(r.path.read_bytes()) for r in records], config)
        )

    q_pids, q_cams = label_arrays(dataset.query)
    g_pids, g_cams = label_arrays(dataset.gallery)
    q, g = feats(dataset.query), feats(dataset.gallery)
    return evaluate_features(q, g, q_pids, g_pids, q_cams, g_cams, metric="cosine"), q, g


def assert_close(served, offline, tol: float = TOLERANCE) -> None:
    assert abs(served.mAP - offline.mAP) <= tol
    assert abs(served.mINP - offline.mINP) <= tol
    assert np.max(np.abs(served.cmc - offline.cmc)) <= tol
    assert served.num_valid_queries == offline.num_valid_queries


@pytest.fixture(scope="module")
def dataset(tiny_synthetic: Path):
    return load_dataset(f"synthetic:{tiny_synthetic}")


@pytest.fixture(scope="module")
def runtime() -> PoolRuntime:
    return PoolRuntime()


# ----------------------------------------------------------------------------- harness core


def test_full_ranking_through_a_backend_equals_offline_and_removes_the_upload(dataset, runtime):
    backend = MemoryBackend(runtime)
    evaluation = evaluate_served(
        backend, dataset, offline_model=runtime, batch=7, progress=False, log=lambda m: None
    )
    expected, _, _ = reference(dataset, runtime)
    assert evaluation.mode == "full"
    assert_close(evaluation.served, expected)
    assert_close(evaluation.offline, expected, tol=0.0)
    assert evaluation.passed and evaluation.max_diff <= TOLERANCE
    assert backend.vectors == {}  # the uploaded gallery was deleted again


def test_upload_sends_camera_source_and_labels_as_metadata(dataset, runtime):
    backend = MemoryBackend(runtime)
    evaluate_served(backend, dataset, keep_gallery=True, progress=False, log=lambda m: None)
    sent = list(backend.metadata.values())
    assert len(sent) == len(dataset.gallery)
    assert sent[0] == gallery_metadata(dataset.gallery[0])
    assert sent[0].camera == dataset.gallery[0].camid
    assert sent[0].source == str(dataset.gallery[0].path)
    assert sent[0].extra["pid"] == dataset.gallery[0].pid


def test_entries_already_on_the_server_are_ignored_and_reported(dataset, runtime):
    backend = MemoryBackend(runtime)
    foreign = [r.path.read_bytes() for r in dataset.train[:5]]
    backend.add(foreign, [s.EntryMetadataIn()] * 5)
    evaluation = evaluate_served(
        backend, dataset, offline_model=runtime, progress=False, log=lambda m: None
    )
    assert evaluation.passed
    assert evaluation.rankings.foreign_matches == 5 * len(dataset.query)
    assert any("already on the server" in note for note in evaluation.notes)
    assert len(backend.vectors) == 5  # only our own upload was removed


def test_a_server_that_truncates_a_full_ranking_is_an_error(dataset, runtime):
    backend = MemoryBackend(runtime, ignore_full_ranking=True)
    with pytest.raises(RuntimeError, match="full_ranking=true left out"):
        evaluate_served(backend, dataset, progress=False, log=lambda m: None)
    assert backend.vectors == {}  # cleaned up even on failure


def test_top_k_mode_compares_with_the_same_truncation_and_states_the_cost(dataset, runtime):
    k = 3
    evaluation = evaluate_served(
        MemoryBackend(runtime), dataset, offline_model=runtime, k=k, progress=False,
        log=lambda m: None,
    )  # fmt: skip
    expected_full, _, _ = reference(dataset, runtime)
    assert evaluation.mode == "top-k" and evaluation.passed
    assert_close(evaluation.offline_full, expected_full, tol=0.0)
    assert evaluation.served.mAP < expected_full.mAP  # some matches lie beyond rank 3 here
    assert np.all(evaluation.served.cmc <= expected_full.cmc + 1e-12)  # lower bounds
    text = " ".join(evaluation.notes)
    assert "count as not retrieved" in text and f"mAP@{k}" in text
    assert f"{100 * expected_full.mAP:.2f}%" in text  # the full-ranking mAP is stated too


# ----------------------------------------------------------------------------- top-k metrics


def test_top_k_metrics_equal_the_full_protocol_when_nothing_is_truncated():
    rng = np.random.default_rng(1)
    for _ in range(10):
        distmat = rng.integers(0, 6, (20, 40)).astype(float)  # many ties
        q_pids, g_pids = rng.integers(-1, 5, 20), rng.integers(-1, 5, 40)
        q_cams, g_cams = rng.integers(0, 3, 20), rng.integers(0, 3, 40)
        full = evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=10)
        returned = evaluate_returned(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=10)
        assert_close(returned, full, tol=1e-12)
        same = evaluate_returned(
            truncate_distmat(distmat, 40), q_pids, g_pids, q_cams, g_cams, max_rank=10
        )
        assert_close(same, full, tol=1e-12)


def test_a_match_beyond_k_counts_as_not_retrieved():
    # One query (pid 1, camera 0); matches at gallery 0 (distance 0.1) and 2 (0.9).
    distmat = np.array([[0.1, 0.5, 0.9, 0.7]])
    args = (np.array([1]), np.array([1, 2, 1, 3]), np.array([0]), np.array([1, 1, 1, 1]))
    full = evaluate_returned(distmat, *args, max_rank=4)
    assert full.mAP == pytest.approx((1 + 2 / 4) / 2)
    top2 = evaluate_returned(truncate_distmat(distmat, 2), *args, max_rank=4)
    assert top2.mAP == pytest.approx(1 / 2)  # the second match adds 0
    assert top2.mINP == 0.0  # not every match was returned
    assert top2.cmc.tolist() == [1.0, 1.0, 1.0, 1.0]


# ----------------------------------------------------------------------------- report


@pytest.fixture(scope="module")
def served_evaluation(dataset, runtime):
    return evaluate_served(
        MemoryBackend(runtime), dataset, offline_model=runtime, progress=False, log=lambda m: None
    )


def _images(page: str) -> list[bytes]:
    import base64

    sources = re.findall(r'src="([^"]+)"', page)
    prefix = "data:image/png;base64,"
    assert sources and all(src.startswith(prefix) for src in sources), sources[:3]
    return [base64.b64decode(src.removeprefix(prefix)) for src in sources]


def test_report_is_one_self_contained_file_with_cmc_rank_lists_and_tables(
    dataset, served_evaluation, tmp_path
):
    from PIL import Image

    from gallery.report import ReportSource

    evaluation = served_evaluation
    source = ReportSource(dataset_spec="synthetic:/data/x", model=_model_info("c" * 64))
    index = write_report(evaluation, dataset, tmp_path / "report", num_queries=4, source=source)
    assert index == tmp_path / "report" / "index.html"
    assert [p.name for p in (tmp_path / "report").iterdir()] == ["index.html"]  # one file
    page = index.read_text()
    for external in ("href=", "http://", "https://", "url(", "<link", "<script", "@import"):
        assert external not in page, external
    images = _images(page)
    worst = len(re.findall(r'<tr class="worst"', page))
    assert len(images) == 1 + worst + 4  # the CMC curve, the worst queries, 4 samples
    with Image.open(io.BytesIO(images[-1])) as image:
        assert image.width > 10 * 64  # the query and its top 10
    assert f"{100 * evaluation.served.mAP:.2f}" in page
    assert f"mINP {100 * evaluation.served.mINP:.2f}%" in page  # in the summary line
    single = write_report(evaluation, dataset, tmp_path / "one.html", source=source)
    assert single == tmp_path / "one.html" and single.is_file()


def test_report_names_the_checkpoint_hash_export_dataset_and_date(
    dataset, served_evaluation, tmp_path
):
    from datetime import UTC, datetime

    from gallery.report import ReportSource

    info = _model_info("0123456789abcdef" * 4)
    info.model.export_dir = "/exports/run7"
    when = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
    source = ReportSource(
        dataset_spec="synthetic:/data/synth", server="http://h:8000", model=info, created=when
    )
    page = write_report(served_evaluation, dataset, tmp_path / "r", source=source).read_text()
    assert "0123456789abcdef" * 4 in page  # the whole hash
    assert "/exports/run7" in page and "synthetic:/data/synth" in page
    assert "2025-03-04 05:06:07 UTC" in page and "http://h:8000" in page
    assert f"{len(dataset.query)} queries, {len(dataset.gallery)} gallery images" in page
    info.model.export_dir = None
    page = write_report(served_evaluation, dataset, tmp_path / "r2", source=source).read_text()
    assert "--expose-export-dir" in page  # says why the export directory is missing


# Hand-computed camera pairs. Gallery: g0 pid1 cam1, g1 pid2 cam1, g2 pid1 cam2,
# g3 pid2 cam2, g4 pid1 cam0, g5 pid3 cam0. Queries: q0 pid1 cam0, q1 pid2 cam0,
# q2 pid1 cam1, q3 pid3 cam1.
PAIR_DISTMAT = np.array(
    [
        [0.5, 0.1, 0.2, 0.3, 0.0, 0.95],  # cam1: g1 x, g0 ok -> R1 0, AP 1/2; cam2: R1 1, AP 1
        [0.4, 0.2, 0.1, 0.05, 0.0, 0.95],  # cam1: g1 ok first -> 1, 1; cam2: g3 ok first -> 1, 1
        [0.0, 0.5, 0.6, 0.1, 0.3, 0.95],  # cam0: g4 ok -> 1, 1; cam2: g3 x, g2 ok -> 0, 1/2
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # cam0: g4 x, g5 ok -> 0, 1/2; cam2: no pid 3: skipped
    ]
)
PAIR_LABELS = (
    np.array([1, 2, 1, 3]),  # q_pids
    np.array([1, 2, 1, 2, 1, 3]),  # g_pids
    np.array([0, 0, 1, 1]),  # q_camids
    np.array([1, 1, 2, 2, 0, 0]),  # g_camids
)
# (query camera, gallery camera or None = all): (rank-1, mAP, valid queries)
PAIR_EXPECTED = {
    (0, 1): (0.5, 0.75, 2),
    (0, 2): (1.0, 1.0, 2),
    (1, 0): (0.5, 0.75, 2),
    (1, 2): (0.0, 0.5, 1),
    # Whole gallery. q0: g1 x, g2 ok (2), g3 x, g0 ok (4): AP 1/2 (g4 removed, same cam).
    # q1: g4 x, g3 ok, g2 x, g1 ok: 1/2. q2: g3 x, g4 ok, g1 x, g2 ok: 1/2 (g0 removed).
    # q3: its match g5 is last of six: AP 1/6.
    (0, None): (0.0, 0.5, 2),
    (1, None): (0.0, (0.5 + 1 / 6) / 2, 2),
}


def test_camera_pairs_on_a_hand_computed_case():
    from gallery.evaluate import camera_pairs

    pairs = camera_pairs(PAIR_DISTMAT, *PAIR_LABELS)
    got = {
        (p.query_camera, p.gallery_camera): (p.result.rank(1), p.result.mAP,
                                             p.result.num_valid_queries)
        for p in pairs
    }  # fmt: skip
    assert set(got) == set(PAIR_EXPECTED)  # no diagonal pair
    for key, (rank1, mean_ap, valid) in PAIR_EXPECTED.items():
        assert got[key][0] == pytest.approx(rank1), key
        assert got[key][1] == pytest.approx(mean_ap), key
        assert got[key][2] == valid, key
    assert {p.num_queries for p in pairs} == {2}


def test_the_camera_table_shows_the_pairs_and_leaves_the_diagonal_empty():
    from gallery.evaluate import camera_pairs
    from gallery.report import camera_table

    page = camera_table(camera_pairs(PAIR_DISTMAT, *PAIR_LABELS))
    cells = re.findall(
        r'data-query-camera="(\d+)" data-gallery-camera="(\w+)" '
        r'data-rank1="([\d.]+)" data-map="([\d.]+)"',
        page,
    )
    shown = {(int(q), None if g == "all" else int(g)): (float(r), float(m)) for q, g, r, m in cells}
    assert set(shown) == set(PAIR_EXPECTED)
    for key, (rank1, mean_ap, _) in PAIR_EXPECTED.items():
        assert shown[key] == pytest.approx((rank1, mean_ap), abs=1e-6), key
    assert "R1 50.00<br>mAP 75.00" in page  # (0, 1) in percent
    assert page.count('class="na"') == 2  # cameras 0 x 0 and 1 x 1
    assert "gallery camera 0" in page and "gallery camera 2" in page


def test_worst_queries_are_the_lowest_ap_in_ascending_order():
    from gallery.evaluate import worst_queries
    from reid.metrics import per_query_scores

    scores = per_query_scores(PAIR_DISTMAT, *PAIR_LABELS)
    assert scores.ap == pytest.approx([0.5, 0.5, 0.5, 1 / 6])
    assert scores.first_rank.tolist() == [2, 2, 2, 6]
    assert [o.query for o in worst_queries(scores, 2)] == [3, 0]  # ties: lower index first


def test_the_report_lists_the_worst_queries_in_ascending_ap(dataset, served_evaluation, tmp_path):
    from reid.metrics import per_query_scores

    q_pids, q_cams = label_arrays(dataset.query)
    g_pids, g_cams = label_arrays(dataset.gallery)
    scores = per_query_scores(served_evaluation.rankings.distmat, q_pids, g_pids, q_cams, g_cams)
    assert np.nanmean(scores.ap) == pytest.approx(served_evaluation.served.mAP)
    assert np.nanmean(scores.inp) == pytest.approx(served_evaluation.served.mINP)
    page = write_report(served_evaluation, dataset, tmp_path / "r", num_worst=5).read_text()
    rows = re.findall(r'<tr class="worst" data-query="(\d+)" data-ap="([\d.]+)"', page)
    listed = [float(ap) for _, ap in rows]
    assert len(listed) == 5 and listed == sorted(listed)
    assert listed == pytest.approx(np.sort(scores.ap[scores.valid])[:5], abs=1e-6)


# ----------------------------------------------------------------------------- real HTTP app


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _app(directory: Path, runtime: Runtime, api_key: str | None = None, dim: int = DIM, **extra):
    from reid.gallery import Gallery
    from server.http import create_app
    from server.service import SearchService
    from server.settings import ServerSettings

    settings = ServerSettings(max_images=16, api_key=api_key, grpc=False, **extra)
    service = SearchService(runtime, Gallery.open(directory, dim, index="flat"), settings)
    return create_app(settings, service)


@pytest.fixture
def live_server(request, tmp_path, runtime) -> Iterator[str]:
    """The real HTTP app on a free local port (uvicorn in a thread); yields its URL.

    Indirect parametrisation passes extra ``ServerSettings`` fields.
    """
    import uvicorn

    port = _free_port()
    config = uvicorn.Config(
        _app(tmp_path / "gallery", runtime, api_key="secret", **getattr(request, "param", {})),
        host="127.0.0.1",
        port=port,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_served_http_path_equals_offline_on_synthetic_data(dataset, runtime, tmp_path):
    from fastapi.testclient import TestClient

    with TestClient(_app(tmp_path / "gallery", runtime)) as http:
        client = ReIDClient("http://testserver", client=http)
        client.wait_ready(timeout=5)
        evaluation = evaluate_served(
            client, dataset, offline_model=runtime, batch=16, progress=False, log=lambda m: None
        )
        assert client.stats().size == 0  # the upload was removed again
    expected, _, _ = reference(dataset, runtime)
    assert_close(evaluation.served, expected)
    assert evaluation.passed


def test_cli_evaluates_a_running_server_with_json_and_report(
    live_server, dataset, runtime, tiny_synthetic, tmp_path, monkeypatch, capsys
):
    import reid.runtimes

    opened = []
    monkeypatch.setattr(
        reid.runtimes, "load_runtime", lambda path, *a, **kw: opened.append(path) or runtime
    )
    argv = [
        "evaluate", "--server", live_server, "--data", f"synthetic:{tiny_synthetic}",
        "--model", str(tmp_path / "export"), "--json", "--report", str(tmp_path / "report"),
        "--api-key", "secret", "--batch", "16", "--no-progress",
        "--save-json", str(tmp_path / "saved" / "evaluation.json"),
    ]  # fmt: skip
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert json.loads((tmp_path / "saved" / "evaluation.json").read_text()) == out
    expected, _, _ = reference(dataset, runtime)
    assert opened == [tmp_path / "export"]
    assert out["mode"] == "full" and out["passed"] is True
    assert abs(out["served"]["mAP"] - expected.mAP) <= TOLERANCE
    assert out["max_diff"] <= TOLERANCE
    assert set(out["diff"]) == {"mAP", "mINP", "cmc_max"}
    assert Path(out["report"]).is_file()


def test_cli_without_the_api_key_reports_the_servers_refusal(live_server, tiny_synthetic, capsys):
    argv = ["evaluate", "--server", live_server, "--data", f"synthetic:{tiny_synthetic}",
            "--no-offline", "--no-progress", "--api-key", ""]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "POST" in err and "/v1/gallery" in err and "HTTP 401" in err


def test_unreachable_server_is_a_clear_error(tiny_synthetic, capsys):
    url = f"http://127.0.0.1:{_free_port()}"
    argv = ["evaluate", "--server", url, "--data", f"synthetic:{tiny_synthetic}",
            "--ready-timeout", "0.5", "--no-offline"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"cannot reach the server at {url}" in err
    assert "not ready within 0.5 s" in err
    with pytest.raises(ServerUnreachableError, match="is it running"):
        ReIDClient(url, timeout=2, retries=0).stats()


def test_offline_reference_needs_an_export_directory(live_server, tiny_synthetic, capsys):
    argv = ["evaluate", "--server", live_server, "--data", f"synthetic:{tiny_synthetic}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "pass --model EXPORT_DIR" in err and "--expose-export-dir" in err


@pytest.mark.parametrize("live_server", [{"expose_export_dir": True}], indirect=True)
def test_without_model_the_offline_reference_is_the_export_the_server_reports(
    live_server, tiny_synthetic, runtime, monkeypatch, capsys, tmp_path
):
    import reid.runtimes

    monkeypatch.setattr(runtime.manifest, "directory", tmp_path / "export")  # where it was read
    served = ReIDClient(live_server).model_info().model.export_dir
    opened = []
    monkeypatch.setattr(
        reid.runtimes, "load_runtime", lambda path, *a, **kw: opened.append(path) or runtime
    )
    argv = ["evaluate", "--server", live_server, "--data", f"synthetic:{tiny_synthetic}",
            "--api-key", "secret", "--no-progress", "--json"]  # fmt: skip
    assert main(argv) == 0
    assert served == str((tmp_path / "export").resolve()) and opened == [Path(served)]
    assert json.loads(capsys.readouterr().out)["passed"] is True


def test_offline_results_match_in_both_modes_without_truncation(dataset, runtime):
    same_mode, full = offline_results(runtime, dataset, k=None, progress=False)
    assert same_mode is full
    truncated, full_again = offline_results(
        runtime, dataset, k=len(dataset.gallery), progress=False
    )
    assert_close(truncated, full_again, tol=1e-9)


# ----------------------------------------------------------------------------- gRPC queries


# ----------------------------------------------------------------------------- real ONNX export


@pytest.fixture(scope="module")
def onnx_export(tmp_path_factory) -> Path:
    """A tiny real export: random-init ResNet-18 at 64x32, ONNX + manifest."""
    import torch

    from export.onnx_export import export_encoder_dir
    from reid.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet18", pretrained=None, input_size=(64, 32)).eval()
    return export_encoder_dir(model, tmp_path_factory.mktemp("export"))


@pytest.mark.slow
def test_served_onnx_model_equals_offline_on_synthetic_data(dataset, onnx_export, tmp_path):
    from fastapi.testclient import TestClient

    from reid.runtimes import load_runtime

    served_runtime = load_runtime(onnx_export, "onnxruntime", device="cpu")
    offline_runtime = load_runtime(onnx_export, "onnxruntime", device="cpu")
    with TestClient(_app(tmp_path / "gallery", served_runtime, dim=512)) as http:
        client = ReIDClient("http://testserver", client=http)
        evaluation = evaluate_served(
            client, dataset, offline_model=offline_runtime, batch=5, progress=False,
            log=lambda m: None,
        )  # fmt: skip
    assert evaluation.max_diff <= TOLERANCE
    assert_close(evaluation.served, evaluation.offline)


def test_cli_top_k_mode_prints_the_table_and_what_truncation_does(
    live_server, tiny_synthetic, capsys
):
    argv = ["evaluate", "--server", live_server, "--data", f"synthetic:{tiny_synthetic}",
            "--k", "3", "--no-offline", "--no-progress", "--api-key", "secret"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Served (top-k, k=3)" in out and "mAP" in out and "R1" in out
    assert "matches beyond rank 3 count as not retrieved" in out
    assert "at most 16 images per request; using --batch 16" in out  # the server's limit


# ----------------------------------------------------------------------------- make demo stages


def _demo_module():
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "scripts" / "demo.py"
    spec = importlib.util.spec_from_file_location("demo_script", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_demo_trains_once_resumes_an_interrupted_run_and_reuses_a_finished_one(tmp_path):
    demo = _demo_module()
    args, paths = demo.parse_args(["--out", str(tmp_path)]), demo.Paths(tmp_path)
    (step,), checkpoint = demo.train_steps(args, paths)
    assert "aff_scl_synthetic.yaml" in " ".join(step.argv) and "--resume" not in step.argv
    assert checkpoint == tmp_path / "train" / "checkpoint_last.pt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"interrupted")
    (step,), _ = demo.train_steps(args, paths)
    assert step.argv[-1] == "--resume"
    (checkpoint.parent / demo.TRAIN_DONE).write_text("done")
    assert demo.train_steps(args, paths) == ([], checkpoint)


def test_demo_prints_its_result_next_to_the_range_measured_over_seeds(monkeypatch):
    demo = _demo_module()
    measured = {"mean": 30.0, "std": 2.0, "min": 27.0, "max": 33.0, "runs": 3}
    monkeypatch.setattr(demo, "EXPECTED_MAP", measured)
    defaults = demo.parse_args([])
    line = demo.expected_range_line(31.2, defaults)
    assert "31.2%" in line and "30.0 +- 2.0" in line and "27.0-33.0 over 3" in line
    assert "inside the expected range" in line
    assert "OUTSIDE" in demo.expected_range_line(12.0, defaults)
    other = demo.parse_args(["--train-override", "train.epochs=2"])  # not what was measured
    assert "no reference range" in demo.expected_range_line(12.0, other)
    assert "no reference range" in demo.expected_range_line(12.0, demo.parse_args(["--seed", "3"]))


def test_demo_exports_again_unless_a_passing_export_is_newer_than_the_checkpoint(tmp_path):
    demo = _demo_module()
    paths = demo.Paths(tmp_path)
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"weights")
    assert len(demo.export_steps(paths, checkpoint, fresh_checkpoint=False)) == 1
    paths.export.mkdir()
    (paths.export / "manifest.json").write_text("{}")
    assert demo.export_steps(paths, checkpoint, fresh_checkpoint=False) == []
    assert len(demo.export_steps(paths, checkpoint, fresh_checkpoint=True)) == 1
    (paths.export / "FAILED").write_text("parity gate failed")
    assert len(demo.export_steps(paths, checkpoint, fresh_checkpoint=False)) == 1


def _model_info(checkpoint_sha256: str | None) -> s.ModelInfo:
    return s.ModelInfo(
        model=s.ModelSummary(
            name="m", embedding_dim=8, input_size=[64, 32], checkpoint_sha256=checkpoint_sha256
        ),
        runtime=s.RuntimeInfo(
            runtime="onnxruntime", device="cpu", model="m", embedding_dim=8, input_size=[64, 32]
        ),
        batching=s.BatchingInfo(enabled=True, max_batch=32, max_wait_ms=2, workers=1),
        limits=s.Limits(
            max_images=64, max_body_mb=32, max_pixels=10**7, max_k=1000, max_full_ranking=10**6
        ),
        auth=s.AuthInfo(writes_need_key=False, reads_need_key=False),
    )


def test_an_offline_reference_from_another_checkpoint_is_refused(tmp_path):
    from gallery.cli import CliError, check_same_export

    served = _model_info("a" * 64)
    check_same_export("a" * 64, served, tmp_path)  # the served export: fine
    check_same_export(None, served, tmp_path)  # an export without a recorded hash: fine
    check_same_export("b" * 64, _model_info(None), tmp_path)  # nothing served to compare
    with pytest.raises(CliError, match="must be the served export"):
        check_same_export("b" * 64, served, tmp_path)


# ----------------------------------------------------------------------------- real processes


def _wait_for(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    with ReIDClient(url, timeout=5, retries=0) as client:
        while time.monotonic() < deadline:
            assert process.poll() is None, "python -m server exited"
            try:
                if client.is_ready():
                    return
            except ServerUnreachableError:
                pass
            time.sleep(0.3)
    raise AssertionError(f"{url} not ready within {timeout} s")


@pytest.mark.slow
def test_gallery_evaluate_over_grpc_against_python_m_server_without_model(
    onnx_export, tiny_synthetic, tmp_path
):
    """The whole served path as a user runs it: two processes, the export found via the API."""
    http_port, grpc_port = _free_port(), _free_port()
    env = {**os.environ, "REID_API_KEY": "secret"}
    server = subprocess.Popen(
        [sys.executable, "-m", "server", "--model", str(onnx_export), "--gallery",
         str(tmp_path / "gallery"), "--http-port", str(http_port), "--grpc-port",
         str(grpc_port), "--runtime", "onnxruntime", "--device", "cpu", "--expose-export-dir"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{http_port}"
        _wait_for(url, server)
        evaluate = subprocess.run(
            [sys.executable, "-m", "gallery", "evaluate", "--server", url, "--data",
             f"synthetic:{tiny_synthetic}", "--grpc", f"127.0.0.1:{grpc_port}", "--json",
             "--no-progress"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert evaluate.returncode == 0, evaluate.stderr
    out = json.loads(evaluate.stdout)
    assert out["passed"] is True and out["offline"] is not None
    assert out["max_diff"] <= TOLERANCE
