"""``/docs`` (Swagger UI) and ``/redoc`` from local files, and the OpenAPI schema they read.

FastAPI's own pages load their scripts from a CDN, so on an air-gapped machine they stay
white. Here the pages load pinned copies vendored in ``server/docs_assets/`` (versions
and how to update them: its README.md), served under ``/docs/assets/``; only the files
listed in :data:`ASSETS` are served, so no request path reaches the file system.

The schema is tidied for "Try it out" (:func:`tidy_openapi`): FastAPI describes uploads
with OpenAPI 3.1's ``contentMediaType``, which Swagger UI shows as a text box, so they
become ``format: binary`` (a file picker); optional inputs (``float | None`` ...) are
described by their type alone, without the ``null`` alternative a form or a query string
cannot send, and optional form fields get an empty example, so Swagger UI leaves them
empty instead of filling in and sending ``0`` (``time_from=0``).
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from importlib.resources import files
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse, Response

from server.errors import NotFoundError

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
ASSETS_URL = "/docs/assets"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"

ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
"""The files of ``server/docs_assets`` the pages load, with their content types."""

SWAGGER_UI_PARAMETERS = {"validatorUrl": None}  # no badge fetched from a public validator


@cache
def asset(name: str) -> bytes:
    """One vendored file (read once per process)."""
    return files("server").joinpath("docs_assets", name).read_bytes()


def install(app: FastAPI) -> None:
    """Add ``/docs``, ``/redoc`` and their assets to ``app`` (built with ``docs_url=None``
    and ``redoc_url=None``) and tidy its OpenAPI schema for them."""
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return _local_only(
            get_swagger_ui_html(
                openapi_url=openapi_url,
                title=f"{app.title} - Swagger UI",
                swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
                swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
                swagger_favicon_url=f"{ASSETS_URL}/favicon-32x32.png",
                oauth2_redirect_url=OAUTH2_REDIRECT_URL,
                swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
            )
        )

    @app.get(OAUTH2_REDIRECT_URL, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return _local_only(
            get_redoc_html(
                openapi_url=openapi_url,
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
                redoc_favicon_url=f"{ASSETS_URL}/favicon-32x32.png",
                with_google_fonts=False,
            )
        )

    @app.get(ASSETS_URL + "/{name}", include_in_schema=False)
    async def docs_asset(name: str) -> Response:
        media_type = ASSETS.get(name)
        if media_type is None:
            raise NotFoundError(f"no documentation asset {name!r}")
        headers = {"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"}
        return Response(asset(name), media_type=media_type, headers=headers)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = tidy_openapi(FastAPI.openapi(app))
            settings = getattr(app.state, "settings", None)
            if settings is not None:
                describe_settings(spec, settings)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _local_only(page: HTMLResponse) -> HTMLResponse:
    """``page`` with a Content-Security-Policy that lets the browser load nothing from
    elsewhere (ReDoc's footer logo, say) and run only this server's scripts and the
    page's own inline script (by its hash)."""
    body = bytes(page.body).decode()
    inline = re.findall(r"<script>(.*?)</script>", body, flags=re.S)
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in inline
    )
    page.headers["Content-Security-Policy"] = (
        f"default-src 'self'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; worker-src 'self' blob:; connect-src 'self'; "
        "font-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
    page.headers["X-Content-Type-Options"] = "nosniff"
    return page


# -- the schema ----------------------------------------------------------------------------


def tidy_openapi(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` (changed in place) with uploads as binary strings and optional inputs
    described by their type alone; responses are left as they are (a ``null`` there is a
    value the server really sends)."""
    _binary_uploads(spec)
    for path_item in spec.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict):
                continue
            for parameter in operation.get("parameters", []):
                if "schema" in parameter:
                    parameter["schema"] = _without_null(parameter["schema"])
    schemas = spec.get("components", {}).get("schemas", {})
    for name in _input_only_schemas(spec):
        required = set(schemas[name].get("required", ()))
        properties = schemas[name].get("properties", {})
        for field, schema in properties.items():
            schema = _without_null(schema)
            if field not in required:
                _left_empty(schema)
            properties[field] = schema
    return spec


def _binary_uploads(node: Any) -> None:
    """``{"type": "string", "contentMediaType": ...}`` -> ``{"type": "string",
    "format": "binary"}``, everywhere (arrays of files included)."""
    if isinstance(node, dict):
        if (
            node.get("type") == "string"
            and "contentMediaType" in node
            and "contentEncoding" not in node
        ):
            del node["contentMediaType"]
            node["format"] = "binary"
        for value in node.values():
            _binary_uploads(value)
    elif isinstance(node, list):
        for value in node:
            _binary_uploads(value)


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """``{"anyOf": [X, {"type": "null"}], ...}`` -> ``X`` with the outer keywords, without
    a ``null`` default or example (an optional input is one that is left out)."""
    options = schema.get("anyOf")
    if isinstance(options, list):
        kept = [option for option in options if option != {"type": "null"}]
        if len(kept) == 1 and len(kept) < len(options):
            outer = {key: value for key, value in schema.items() if key != "anyOf"}
            schema = {**kept[0], **outer}
    for key in ("default", "example"):
        if key in schema and schema[key] is None:
            del schema[key]
    return schema


def _left_empty(schema: dict[str, Any]) -> None:
    """An optional form field without a default gets the example ``""``.

    Swagger UI fills every form field with a sample of its type (``0`` for a number,
    ``"string"`` for a string) and sends it; an empty example keeps the field empty, and
    the server reads an empty form value as a field left out. Arrays (their items are
    edited one by one, empty by default) and files are left as they are.
    """
    if "default" in schema or "examples" in schema or "example" in schema:
        return
    kind = schema.get("type")
    if kind in ("number", "integer", "string") and "format" not in schema:
        schema["examples"] = [""]
    elif kind == "array" and schema.get("items", {}).get("format") != "binary":
        schema["examples"] = [[]]


def _refs(node: Any) -> set[str]:
    """Names of the component schemas ``node`` refers to directly."""
    found: set[str] = set()
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            found.add(ref.rsplit("/", 1)[1])
        for value in node.values():
            found |= _refs(value)
    elif isinstance(node, list):
        for value in node:
            found |= _refs(value)
    return found


def _closure(names: set[str], schemas: dict[str, Any]) -> set[str]:
    """``names`` and every component schema they refer to, transitively."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen or name not in schemas:
            continue
        seen.add(name)
        todo.extend(_refs(schemas[name]))
    return seen


def _input_only_schemas(spec: dict[str, Any]) -> set[str]:
    """Component schemas used by request bodies and by no response."""
    schemas = spec.get("components", {}).get("schemas", {})
    inputs: set[str] = set()
    outputs: set[str] = set()
    for path_item in spec.get("paths", {}).values():
        for operation in path_item.values():
            if isinstance(operation, dict):
                inputs |= _refs(operation.get("requestBody", {}))
                outputs |= _refs(operation.get("responses", {}))
    return _closure(inputs, schemas) - _closure(outputs, schemas)


# -- what the settings change --------------------------------------------------------------


def describe_settings(spec: dict[str, Any], settings: Any) -> dict[str, Any]:
    """``spec`` (changed in place) as this server's settings make it: operations that
    need no key under them declare no security (and no 401/403), and ``k`` states its
    range ``1..max_k``."""
    from fastapi.routing import APIRoute

    from server.routes import ROUTERS
    from server.routes.deps import require_read, require_write

    open_calls = set()
    if not settings.reads_need_key:
        open_calls.add(require_read)
    if not settings.writes_need_key:
        open_calls.add(require_write)
    paths = spec.get("paths", {})
    for route in (route for router in ROUTERS for route in router.routes):
        if not isinstance(route, APIRoute) or route.path not in paths:
            continue
        calls = _dependency_calls(route.dependant)
        needs_key = calls & {require_read, require_write}
        if not needs_key or not needs_key <= open_calls:
            continue
        for method in route.methods:
            operation = paths[route.path].get(method.lower())
            if isinstance(operation, dict):
                operation.pop("security", None)
                for code in ("401", "403"):
                    operation.get("responses", {}).pop(code, None)
    _k_range(spec, settings.max_k)
    return spec


def _dependency_calls(dependant: Any) -> set[Any]:
    """Every callable a route depends on, transitively."""
    found = set()
    todo = list(dependant.dependencies)
    while todo:
        sub = todo.pop()
        found.add(sub.call)
        todo.extend(sub.dependencies)
    return found


def _k_range(spec: dict[str, Any], max_k: int) -> None:
    """``k`` (a form field or a query parameter) as ``1..max_k``."""
    for path_item in spec.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict):
                continue
            for parameter in operation.get("parameters", []):
                if parameter.get("name") == "k" and "schema" in parameter:
                    parameter["schema"].update(minimum=1, maximum=max_k)
    for schema in spec.get("components", {}).get("schemas", {}).values():
        k = schema.get("properties", {}).get("k")
        if isinstance(k, dict) and k.get("type") == "integer":
            k.update(minimum=1, maximum=max_k)
