"""Served-path evaluation (``python -m gallery evaluate``) equals the offline evaluation.

The served side runs through the real HTTP app and search service (``server.http``,
``server.service``, ``gallery.Gallery``) in process, with a small deterministic runtime
standing in for an exported model; the offline reference embeds the same files with the
same runtime. Unit tests run the harness against an in-memory backend that answers
with the API's own models (``reid_client.schemas``); one slow test runs the real
``python -m server`` and ``python -m gallery evaluate`` processes, queries over gRPC.
"""

from __future__ import annotations

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


def test_report_has_the_cmc_curve_rank_lists_and_table(dataset, runtime, tmp_path):
    evaluation = evaluate_served(
        MemoryBackend(runtime), dataset, offline_model=runtime, progress=False, log=lambda m: None
    )
    index = write_report(evaluation, dataset, tmp_path / "report", num_queries=4)
    page = index.read_text()
    linked = re.findall(r'src="([^"]+)"', page)
    assert "cmc.png" in linked
    rank_lists = [name for name in linked if name.startswith("ranklists/")]
    assert len(rank_lists) == 4
    for name in linked:  # relative links that resolve inside the report folder
        assert (index.parent / name).is_file()
    assert f"{100 * evaluation.served.mAP:.2f}" in page
    from PIL import Image

    with Image.open(index.parent / rank_lists[0]) as image:
        assert image.width > 10 * 64  # the query and its top 10


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
    ]  # fmt: skip
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
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
