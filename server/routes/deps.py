"""What the routes depend on: the service (503 until loaded), the API keys, error docs.

Everything comes from ``request.app.state`` (set by ``server.http.create_app``), so the
routers are plain module-level objects. The dependencies are ``async`` although they never
wait: FastAPI runs a plain ``def`` dependency in a worker thread, a hop per dependency
and request.
"""

from typing import Annotated, Any

from fastapi import Depends, Path, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from reid_client import schemas as s
from server.errors import NotReadyError
from server.service import SearchService

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="ApiKey")
_bearer = HTTPBearer(auto_error=False, scheme_name="Bearer")


async def loaded_service(request: Request) -> SearchService | None:
    """The service, or None while it is still loading (for health and metrics)."""
    return request.app.state.service


async def get_service(
    service: Annotated[SearchService | None, Depends(loaded_service)],
) -> SearchService:
    """The service; ``NotReadyError`` (503) while it is still loading."""
    if service is None:
        raise NotReadyError("the model and gallery are still loading")
    return service


def _key(api_key: str | None, bearer: HTTPAuthorizationCredentials | None) -> str | None:
    return api_key or (bearer.credentials if bearer is not None else None)


async def require_read(
    service: Annotated[SearchService, Depends(get_service)],
    api_key: Annotated[str | None, Security(_api_key_header)] = None,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
) -> SearchService:
    """The service, after checking the read key (when one is configured)."""
    service.authorize(_key(api_key, bearer), write=False)
    return service


async def require_write(
    service: Annotated[SearchService, Depends(get_service)],
    api_key: Annotated[str | None, Security(_api_key_header)] = None,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
) -> SearchService:
    """The service, after checking the write key (when one is configured)."""
    service.authorize(_key(api_key, bearer), write=True)
    return service


Reader = Annotated[SearchService, Depends(require_read)]
Writer = Annotated[SearchService, Depends(require_write)]
MaybeService = Annotated[SearchService | None, Depends(loaded_service)]
EntryId = Annotated[int, Path(ge=0, le=s.MAX_ID, description="gallery entry id")]


# -- documented refusals -------------------------------------------------------------------

Responses = dict[int | str, dict[str, Any]]

_ERRORS: Responses = {
    400: {"model": s.ErrorResponse, "description": "Bad input (undecodable image, bad k...)"},
    401: {"model": s.ErrorResponse, "description": "API key missing"},
    403: {"model": s.ErrorResponse, "description": "API key wrong"},
    404: {"model": s.ErrorResponse, "description": "Unknown gallery id"},
    413: {"model": s.ErrorResponse, "description": "Too many images, bytes or pixels"},
    415: {"model": s.ErrorResponse, "description": "Unsupported content type"},
    422: {"model": s.ErrorResponse, "description": "Malformed request fields"},
    503: {"model": s.ErrorResponse, "description": "Not ready or overloaded"},
}


def errors(*codes: int) -> Responses:
    """The documented error answers with these status codes."""
    return {code: _ERRORS[code] for code in codes}


READ_ERRORS = errors(400, 401, 403, 422, 503)
IMAGE_ERRORS = errors(400, 401, 403, 413, 415, 422, 503)
NOT_FOUND = errors(404)
