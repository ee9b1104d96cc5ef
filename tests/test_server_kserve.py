"""The Open Inference Protocol (KServe v2) endpoints: what Triton's clients and
perf_analyzer send, answered by our encoder through the shared batcher."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from server_fakes import DIM, ColourRuntime

from reid.gallery import Gallery
from server.http import create_app
from server.routes.kserve import HEADER_LENGTH
from server.service import SearchService
from server.settings import ServerSettings

SHAPE = [2, 3, 32, 16]  # the fake runtime's input: N x 3 x 32 x 16


@pytest.fixture
def client(tmp_path):
    settings = ServerSettings(max_images=4, max_body_mb=1)
    gallery = Gallery.open(tmp_path / "gallery", DIM, index="flat")
    with TestClient(create_app(settings, SearchService(ColourRuntime(), gallery, settings))) as c:
        yield c


def batch(count: int = 2) -> np.ndarray:
    rng = np.random.default_rng(count)
    return rng.uniform(-1, 1, (count, 3, 32, 16)).astype(np.float32)


def expected(images: np.ndarray) -> np.ndarray:
    return ColourRuntime().embed(images)


def infer_json(client, images: np.ndarray, name: str = "reid", **extra):
    body = {"inputs": [{"name": "images", "datatype": "FP32", "shape": list(images.shape),
                        "data": images.reshape(-1).tolist()}], **extra}  # fmt: skip
    text = json.dumps(body)  # Python's json writes NaN as the NaN token (httpx refuses to)
    return client.post(f"/v2/models/{name}/infer", content=text)


def infer_binary(client, images: np.ndarray, binary_output: bool = True):
    raw = images.astype("<f4").tobytes()
    header = {
        "inputs": [{"name": "images", "datatype": "FP32", "shape": list(images.shape),
                    "parameters": {"binary_data_size": len(raw)}}],
        "outputs": [{"name": "embeddings", "parameters": {"binary_data": binary_output}}],
    }  # fmt: skip
    text = json.dumps(header).encode()
    return client.post(
        "/v2/models/reid/infer",
        content=text + raw,
        headers={HEADER_LENGTH: str(len(text)), "Content-Type": "application/octet-stream"},
    )


def test_health_and_server_metadata(client):
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200
    meta = client.get("/v2").json()
    assert "binary_tensor_data" in meta["extensions"]


def test_model_metadata_names_the_input_and_output_tensors(client):
    meta = client.get("/v2/models/reid").json()
    assert meta["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, 3, 32, 16]}]
    assert meta["outputs"] == [{"name": "embeddings", "datatype": "FP32", "shape": [-1, DIM]}]
    assert client.get("/v2/models/reid/versions/1").json()["name"] == "reid"
    assert client.get("/v2/models/colour-fake/ready").json()["ready"] is True  # manifest name


def test_json_inference_returns_the_encoder_embeddings(client):
    images = batch()
    reply = infer_json(client, images, id="req-7")
    assert reply.status_code == 200, reply.text
    out = reply.json()
    assert out["model_name"] == "reid" and out["id"] == "req-7"
    (tensor,) = out["outputs"]
    assert tensor["name"] == "embeddings" and tensor["shape"] == [2, DIM]
    got = np.asarray(tensor["data"], np.float32).reshape(2, DIM)
    np.testing.assert_allclose(got, expected(images), rtol=1e-5, atol=1e-6)


def test_binary_tensors_in_and_out(client):
    images = batch(3)
    reply = infer_binary(client, images)
    assert reply.status_code == 200, reply.text
    size = int(reply.headers[HEADER_LENGTH])
    header = json.loads(reply.content[:size])
    (tensor,) = header["outputs"]
    assert tensor["parameters"]["binary_data_size"] == 3 * DIM * 4
    got = np.frombuffer(reply.content[size:], "<f4").reshape(3, DIM)
    np.testing.assert_allclose(got, expected(images), rtol=1e-5, atol=1e-6)
    as_json = infer_binary(client, images, binary_output=False).json()
    assert len(as_json["outputs"][0]["data"]) == 3 * DIM


@pytest.mark.parametrize(
    ("change", "status", "message"),
    [
        (
            lambda b: b["inputs"][0].update(shape=[2, 3, 16, 16], data=[0.0] * 1536),
            400,
            "FP32 [N, 3, 32, 16]",
        ),
        (lambda b: b["inputs"][0].update(datatype="INT8"), 400, "datatype must be one of"),
        (lambda b: b["inputs"][0].update(data=[1.0, 2.0]), 400, "values for shape"),
        (lambda b: b["inputs"][0].update(shape=[9, 3, 32, 16]), 413, "the limit is 4"),
        (lambda b: b["inputs"][0].update(shape=[2, 3, -32, 16]), 400, "non-negative"),
        (lambda b: b.update(inputs=[]), 400, "exactly one input"),
        (lambda b: b["inputs"][0].pop("data"), 400, "neither data nor binary_data_size"),
    ],
)
def test_bad_requests_get_the_protocols_error_object(client, change, status, message):
    images = batch()
    body = {"inputs": [{"name": "images", "datatype": "FP32", "shape": list(images.shape),
                        "data": images.reshape(-1).tolist()}]}  # fmt: skip
    change(body)
    reply = client.post("/v2/models/reid/infer", json=body)
    assert reply.status_code == status
    assert message in reply.json()["error"]


def test_non_finite_values_and_unknown_models_are_refused(client):
    images = batch()
    images[0, 0, 0, 0] = np.nan  # sent as JSON's NaN token
    reply = infer_json(client, images)
    assert reply.status_code == 400 and "NaN" in reply.json()["error"]
    reply = infer_json(client, batch(), name="resnet")
    assert reply.status_code == 404 and "serves 'reid'" in reply.json()["error"]


def test_a_binary_header_length_outside_the_body_is_refused(client):
    reply = client.post("/v2/models/reid/infer", content=b"{}", headers={HEADER_LENGTH: "999"})
    assert reply.status_code == 400 and "outside the body" in reply.json()["error"]
    reply = client.post("/v2/models/reid/infer", content=b"not json")
    assert reply.status_code == 400 and "not JSON" in reply.json()["error"]


def test_ordinary_inference_skips_fastapis_dependency_solving_and_refusals_do_not(tmp_path, solved):
    settings = ServerSettings(max_images=4, read_key="reader")
    gallery = Gallery.open(tmp_path / "gallery", DIM, index="flat")
    service = SearchService(ColourRuntime(), gallery, settings)
    images = batch()
    with TestClient(create_app(settings, service), headers={"X-API-Key": "reader"}) as c:
        reply = infer_json(c, images)
        assert reply.status_code == 200, reply.text
        np.testing.assert_allclose(reply.json()["outputs"][0]["data"],
                                   expected(images).reshape(-1), atol=1e-5)  # fmt: skip
        reply = c.post("/v2/models/reid/versions/1/infer", content=json.dumps(
            {"inputs": [{"name": "images", "datatype": "FP32", "shape": list(images.shape),
                         "data": images.reshape(-1).tolist()}]}))  # fmt: skip
        assert reply.status_code == 200 and reply.json()["model_version"] == "1"
        assert solved == []
        for headers, status in (({"X-API-Key": ""}, 401), ({"X-API-Key": "wrong"}, 403)):
            reply = c.post("/v2/models/reid/infer", content=b"{}", headers=headers)
            assert reply.status_code == status, reply.text  # FastAPI's refusal, as before
        assert len(solved) == 2


def test_tritons_own_http_client_works_unchanged(tmp_path):
    http = pytest.importorskip("tritonclient.http")
    from live_server import LiveServer

    server = LiveServer(tmp_path / "gallery", log=tmp_path / "server.log").wait_ready()
    try:
        triton = http.InferenceServerClient(url=server.url.removeprefix("http://"))
        assert triton.is_server_live() and triton.is_model_ready("reid")
        meta = triton.get_model_metadata("reid")
        assert [int(d) for d in meta["inputs"][0]["shape"]] == [-1, 3, 32, 16]
        images = batch(2)
        tensor = http.InferInput("images", list(images.shape), "FP32")
        tensor.set_data_from_numpy(images, binary_data=True)
        wanted = http.InferRequestedOutput("embeddings", binary_data=True)
        result = triton.infer("reid", [tensor], outputs=[wanted])
        np.testing.assert_allclose(result.as_numpy("embeddings"), expected(images), atol=1e-5)
    finally:
        server.stop()
