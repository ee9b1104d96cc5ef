"""``/v1/model``, ``/healthz``, ``/readyz`` and ``/metrics``: the service itself."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from reid_client import schemas as s
from server.routes.deps import READ_ERRORS, MaybeService, Reader

router = APIRouter(tags=["service"])


@router.get(
    "/v1/model", summary="The served model, runtime and serving settings", responses=READ_ERRORS
)
async def model(service: Reader) -> s.ModelInfo:
    return service.model_info()


@router.get("/healthz", summary="Liveness")
async def healthz() -> s.Health:
    return s.Health(status="ok")


@router.get(
    "/readyz",
    summary="Readiness: model and gallery loaded",
    response_model=s.Health,
    responses={503: {"model": s.Health, "description": "Not ready"}},
)
async def readyz(service: MaybeService) -> Response:
    ready = service is not None and service.is_ready()
    body = s.Health(status="ready" if ready else "not ready")
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text"}},
)
async def metrics(service: MaybeService) -> Response:
    if service is None:
        return Response(b"", media_type="text/plain")
    return Response(service.metrics.render(), media_type=service.metrics.content_type)
