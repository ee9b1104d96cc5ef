"""``/`` and ``/static/*``: the search page, plain HTML + JS + CSS from package data.

The page (``server/static/``) needs no build step and loads nothing from outside the
server, so it works on an air-gapped machine. It talks to the API with ``fetch()`` and
sends the key in the ``X-API-Key`` header, never in a URL; thumbnails are fetched the
same way and shown through blob URLs. Only the files listed in :data:`ASSETS` are
served, so no path from the request ever reaches the file system.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import Response

from server.errors import NotFoundError

router = APIRouter(include_in_schema=False)

ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

# Everything the page loads comes from this server; thumbnails are blob: URLs.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; "
        "img-src 'self' blob: data:; connect-src 'self'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@cache
def asset(name: str) -> bytes:
    """One file of ``server/static`` (read once per process)."""
    return files("server").joinpath("static", name).read_bytes()


@router.get("/", response_class=Response)
async def index() -> Response:
    return Response(asset("index.html"), media_type="text/html", headers=SECURITY_HEADERS)


@router.get("/static/{name}", response_class=Response)
async def static(name: str) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFoundError(f"no static file {name!r}")
    return Response(asset(name), media_type=media_type, headers=SECURITY_HEADERS)
