"""The Open Inference Protocol (KServe v2, as NVIDIA Triton speaks it) over HTTP.

So Triton's clients (``tritonclient.http``) and ``perf_analyzer`` work against this server
unchanged: the encoder is the model ``reid`` (also reachable under its manifest name),
with one input, the preprocessed ``FP32 [N, 3, H, W]`` batch, and one output, the
L2-normalised ``FP32 [N, D]`` embeddings. Requests share the dynamic batcher with every
other request. Both request encodings are accepted: JSON ``data`` and Triton's binary
tensor extension (``Inference-Header-Content-Length``: a JSON header, then the raw
little-endian tensor bytes); outputs come back binary when the request asks for it.

    GET  /v2                          server metadata
    GET  /v2/health/live | ready      liveness / readiness (200 or 503)
    GET  /v2/models/{name}[/versions/1]          model metadata
    GET  /v2/models/{name}[/versions/1]/ready    model readiness
    GET  /v2/models/{name}[/versions/1]/config   Triton's model configuration (as JSON)
    POST /v2/models/{name}[/versions/1]/infer    inference

Errors answer ``{"error": "..."}`` with 400 (bad request), 404 (unknown model), 413 (more
images than ``max_images``) or 503 (not loaded), as the protocol specifies.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from server.errors import ServiceError
from server.routes.deps import loaded_service, require_read
from server.routes.fastpath import fast_path, request_key
from server.service import SearchService

router = APIRouter(tags=["open inference protocol (KServe v2)"])

MODEL_NAME = "reid"
VERSION = "1"
HEADER_LENGTH = "Inference-Header-Content-Length"
DTYPES = {"FP32": np.dtype("<f4"), "FP16": np.dtype("<f2"), "FP64": np.dtype("<f8")}


class ProtocolError(Exception):
    """A request the protocol rejects: the status and the message for ``{"error"}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _names(service: SearchService) -> set[str]:
    return {MODEL_NAME, service.runtime.manifest.model_name}


def _model(service: SearchService | None, name: str, version: str | None) -> SearchService:
    if service is None:
        raise ProtocolError(503, "the model is still loading")
    if name not in _names(service) or version not in (None, VERSION):
        raise ProtocolError(404, f"unknown model {name!r} (version {version or 'any'}); "
                            f"this server serves {MODEL_NAME!r} version {VERSION}")  # fmt: skip
    return service


def _metadata(service: SearchService, name: str) -> dict[str, Any]:
    manifest = service.runtime.manifest
    pre = manifest.preprocess
    return {
        "name": name,
        "versions": [VERSION],
        "platform": f"reid_{service.runtime.name}",
        "inputs": [{"name": manifest.input_name, "datatype": "FP32",
                    "shape": [-1, 3, pre.height, pre.width]}],
        "outputs": [{"name": manifest.output_name, "datatype": "FP32",
                     "shape": [-1, service.runtime.embedding_dim]}],
    }  # fmt: skip


@router.get("/v2", summary="Server metadata (Open Inference Protocol)")
async def server_metadata() -> dict[str, Any]:
    return {
        "name": "reid-server",
        "version": "1.0",
        "extensions": ["binary_tensor_data", "model_configuration"],
    }


@router.get("/v2/health/live", summary="Liveness (Open Inference Protocol)")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/v2/health/ready", summary="Readiness (Open Inference Protocol)")
async def ready(service: Annotated[SearchService | None, Depends(loaded_service)]) -> Response:
    ok = service is not None and service.is_ready()
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)


@router.get("/v2/models/{name}", summary="Model metadata (Open Inference Protocol)")
@router.get("/v2/models/{name}/versions/{version}", include_in_schema=False)
async def model_metadata(
    name: str,
    service: Annotated[SearchService | None, Depends(loaded_service)],
    version: str | None = None,
) -> Response:
    try:
        return JSONResponse(_metadata(_model(service, name, version), name))
    except ProtocolError as exc:
        return _error(exc.status, str(exc))


def _config(service: SearchService, name: str) -> dict[str, Any]:
    """Triton's ``ModelConfig`` as JSON (what ``perf_analyzer`` reads before a run)."""
    manifest = service.runtime.manifest
    pre = manifest.preprocess
    settings = service.settings
    return {
        "name": name,
        "platform": f"reid_{service.runtime.name}",
        "max_batch_size": int(settings.max_images),
        "input": [{"name": manifest.input_name, "data_type": "TYPE_FP32",
                   "format": "FORMAT_NONE", "dims": [3, pre.height, pre.width]}],
        "output": [{"name": manifest.output_name, "data_type": "TYPE_FP32",
                    "dims": [service.runtime.embedding_dim]}],
        "dynamic_batching": {"max_queue_delay_microseconds": int(settings.max_wait_ms * 1000)},
        "instance_group": [{"kind": "KIND_GPU" if service.runtime.device == "cuda"
                            else "KIND_CPU", "count": int(settings.workers)}],
    }  # fmt: skip


@router.get("/v2/models/{name}/config", summary="Model configuration (Triton's extension)")
@router.get("/v2/models/{name}/versions/{version}/config", include_in_schema=False)
async def model_config(
    name: str,
    service: Annotated[SearchService | None, Depends(loaded_service)],
    version: str | None = None,
) -> Response:
    try:
        return JSONResponse(_config(_model(service, name, version), name))
    except ProtocolError as exc:
        return _error(exc.status, str(exc))


@router.get("/v2/models/{name}/ready", summary="Model readiness (Open Inference Protocol)")
@router.get("/v2/models/{name}/versions/{version}/ready", include_in_schema=False)
async def model_ready(
    name: str,
    service: Annotated[SearchService | None, Depends(loaded_service)],
    version: str | None = None,
) -> Response:
    try:
        model = _model(service, name, version)
    except ProtocolError as exc:
        return _error(exc.status, str(exc))
    ok = model.is_ready()
    return JSONResponse({"name": name, "ready": ok}, status_code=200 if ok else 503)


async def _infer(
    request: Request, service: SearchService, name: str, version: str | None
) -> Response:
    try:
        model = _model(service, name, version)
        header, payload = _split(await request.body(), request.headers.get(HEADER_LENGTH))
        batch = _input_tensor(header, payload, model)
        embeddings = await model.embed_tensor(batch)
    except ProtocolError as exc:
        return _error(exc.status, str(exc))
    except ServiceError as exc:
        return _error(exc.http_status, str(exc))
    return _response(header, name, model, embeddings)


async def _infer_fast(request: Request) -> Response | None:
    """``infer`` without FastAPI's dependency solving (``server.routes.fastpath``): None
    (FastAPI's turn, and its refusals) while the service is loading or the key is refused."""
    service: SearchService | None = request.app.state.service
    if service is None:
        return None
    try:
        service.authorize(request_key(request.headers), write=False)
    except ServiceError:
        return None
    params = request.path_params
    return await _infer(request, service, params["name"], params.get("version"))


@router.post("/v2/models/{name}/infer", summary="Inference (Open Inference Protocol)")
@router.post("/v2/models/{name}/versions/{version}/infer", include_in_schema=False)
@fast_path(_infer_fast)
async def infer(
    name: str,
    request: Request,
    service: Annotated[SearchService, Depends(require_read)],
    version: str | None = None,
) -> Response:
    return await _infer(request, service, name, version)


def _split(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    """The JSON inference header and the binary payload after it (if any)."""
    if header_length is None:
        size = len(body)
    else:
        try:
            size = int(header_length)
        except ValueError:
            raise ProtocolError(400, f"{HEADER_LENGTH} is not an integer") from None
        if not 0 < size <= len(body):
            raise ProtocolError(400, f"{HEADER_LENGTH} {size} is outside the body")
    try:
        header = json.loads(body[:size])
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(400, f"the inference request is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ProtocolError(400, "the inference request must be a JSON object")
    return header, body[size:]


def _input_tensor(header: dict[str, Any], payload: bytes, model: SearchService) -> np.ndarray:
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise ProtocolError(400, "send exactly one input: the FP32 [N, 3, H, W] image batch")
    spec = inputs[0]
    dtype = DTYPES.get(spec.get("datatype"))
    if dtype is None:
        raise ProtocolError(400, f"input datatype must be one of {', '.join(DTYPES)}, "
                            f"got {spec.get('datatype')!r}")  # fmt: skip
    shape = spec.get("shape")
    if (
        not isinstance(shape, list)
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        or len(shape) != 4
    ):
        raise ProtocolError(400, f"input shape must be 4 non-negative integers, got {shape!r}")
    limit = model.settings.max_images
    if shape[0] > limit:
        raise ProtocolError(413, f"{shape[0]} images in one request; the limit is {limit}")
    count = math.prod(shape)
    parameters = spec.get("parameters") or {}
    if "binary_data_size" in parameters:
        size = parameters["binary_data_size"]
        if not isinstance(size, int) or size != count * dtype.itemsize or size > len(payload):
            raise ProtocolError(400, f"binary_data_size {size!r} does not match shape {shape} "
                                f"of {spec['datatype']} ({len(payload)} bytes sent)")  # fmt: skip
        array = np.frombuffer(payload[:size], dtype=dtype)
    else:
        data = spec.get("data")
        if data is None:
            raise ProtocolError(400, "the input has neither data nor binary_data_size")
        try:
            array = np.asarray(data, dtype=dtype).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise ProtocolError(400, f"input data are not numbers: {exc}") from None
        if array.size != count:
            raise ProtocolError(400, f"{array.size} values for shape {shape} ({count} needed)")
    return array.astype(np.float32).reshape(shape)  # a writable copy (frombuffer is not)


def _wants_binary(header: dict[str, Any], output_name: str) -> bool:
    if (header.get("parameters") or {}).get("binary_data_output"):
        return True
    for output in header.get("outputs") or []:
        if isinstance(output, dict) and output.get("name") == output_name:
            return bool((output.get("parameters") or {}).get("binary_data"))
    return False


def _response(
    header: dict[str, Any], name: str, model: SearchService, embeddings: np.ndarray
) -> Response:
    output_name = model.runtime.manifest.output_name
    out: dict[str, Any] = {"name": output_name, "datatype": "FP32",
                           "shape": list(embeddings.shape)}  # fmt: skip
    body: dict[str, Any] = {"model_name": name, "model_version": VERSION, "outputs": [out]}
    if "id" in header:
        body["id"] = header["id"]
    if not _wants_binary(header, output_name):
        out["data"] = embeddings.astype(np.float32).reshape(-1).tolist()
        return JSONResponse(body)
    raw = np.ascontiguousarray(embeddings, dtype="<f4").tobytes()
    out["parameters"] = {"binary_data_size": len(raw)}
    text = json.dumps(body).encode()
    return Response(
        text + raw,
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(text))},
    )
