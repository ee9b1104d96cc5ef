"""``FastPathMiddleware``: requests for fast-path routes skip the ASGI stack below it,
choose the route the router would, and fall through intact when declined."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from server_fakes import image_bytes

from server.errors import BadInputError
from server.routes.fastpath import FastPathMiddleware, fast_path

router = APIRouter()
seen: dict[str, object] = {}


async def _hot_fast(request: Request) -> JSONResponse | None:
    seen["offers"] = seen.get("offers", 0) + 1
    if request.headers.get("x-decline"):
        if request.headers.get("x-read-first"):
            await request.body()
        return None
    if request.headers.get("x-refuse"):
        raise BadInputError("refused by the fast path")
    seen["route"] = request.scope["route"].path
    body = await request.body()
    return JSONResponse({"by": "fast", "n": request.path_params["n"], "bytes": len(body)})


@router.post("/items/0")  # also matches the fast route's pattern below: the router takes this
async def item_zero() -> dict:
    return {"by": "ordinary zero"}


@router.post("/items/{n:int}")
@fast_path(_hot_fast)
async def hot(n: int, request: Request) -> dict:
    return {"by": "ordinary", "n": n, "bytes": len(await request.body())}


def make_app() -> tuple[FastAPI, list[str]]:
    app = FastAPI()
    app.include_router(router)
    below: list[str] = []

    class Below:  # records what reaches the stack under the fast path
        def __init__(self, inner):
            self.inner = inner

        async def __call__(self, scope, receive, send):
            below.append(scope["path"])
            await self.inner(scope, receive, send)

    app.add_middleware(Below)
    app.add_middleware(FastPathMiddleware, routes=lambda: list(router.routes))
    return app, below


def test_a_fast_path_request_is_answered_above_the_rest_of_the_stack():
    app, below = make_app()
    r = TestClient(app).post("/items/7", content=b"abc")
    assert r.json() == {"by": "fast", "n": 7, "bytes": 3}  # the path parameter converted
    assert below == []
    assert seen["route"] == "/items/{n:int}"  # the template the request metrics count


def test_the_route_the_router_would_choose_wins():
    app, below = make_app()
    client = TestClient(app)
    assert client.post("/items/0").json() == {"by": "ordinary zero"}
    assert client.get("/items/7").status_code == 405  # another method: the router's answer
    assert client.post("/nowhere").status_code == 404
    assert below == ["/items/0", "/items/7", "/nowhere"]


def test_a_declined_request_goes_on_with_its_body_and_is_not_offered_twice():
    app, below = make_app()
    client = TestClient(app)
    offered_before = seen.get("offers", 0)
    for headers in ({"x-decline": "1"}, {"x-decline": "1", "x-read-first": "1"}):
        r = client.post("/items/3", content=b"hello", headers=headers)
        assert r.json() == {"by": "ordinary", "n": 3, "bytes": 5}
    assert below == ["/items/3", "/items/3"]
    assert seen["offers"] - offered_before == 2  # once each: the route did not ask again


def test_a_service_error_answers_as_the_apps_handler_does():
    app, _ = make_app()
    r = TestClient(app).post("/items/1", headers={"x-refuse": "1"})
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "BadInputError"
    assert r.json()["error"]["message"] == "refused by the fast path"


def _server_client(tmp_path, *, fast_path_middleware: bool):
    """The real app (fake runtime, small gallery), with or without the middleware, and
    the paths that reached the stack below where it sits."""
    from starlette.middleware import Middleware
    from test_server_http import make_client, populate

    client = make_client(tmp_path)
    below: list[str] = []

    class Below:
        def __init__(self, inner):
            self.inner = inner

        async def __call__(self, scope, receive, send):
            if scope["type"] == "http":
                below.append(f"{scope['method']} {scope['path']}")
            await self.inner(scope, receive, send)

    app = client.app
    if not fast_path_middleware:
        app.user_middleware = [m for m in app.user_middleware if m.cls is not FastPathMiddleware]
    app.user_middleware.append(Middleware(Below))  # innermost: under FastPathMiddleware
    client.__enter__()
    populate(client)
    below.clear()
    return client, below


def _tensor_request() -> tuple[bytes, dict[str, str]]:
    import json

    import numpy as np
    from server_fakes import fake_manifest

    pre = fake_manifest(8).preprocess
    raw = np.zeros((1, 3, pre.height, pre.width), "<f4").tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "images",
                    "datatype": "FP32",
                    "shape": [1, 3, pre.height, pre.width],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    ).encode()
    return header + raw, {"Inference-Header-Content-Length": str(len(header))}  # fmt: skip


REQUESTS = [
    ("POST", "/v1/search/raw?k=2", "jpeg"),
    ("POST", "/v1/search/raw?k=abc", "jpeg"),  # declined by the fast path: FastAPI's 422
    ("POST", "/v1/search/raw", "text"),  # 415 from the fast path (a ServiceError)
    ("POST", "/v1/search/raw/", "jpeg"),  # a trailing slash: the router's redirect
    ("GET", "/v1/search/raw", None),  # another method: 405 with Allow
    ("HEAD", "/v1/search/raw", None),
    ("POST", "/v2/models/reid/infer", "tensor"),
    ("POST", "/v2/models/reid/versions/1/infer", "tensor"),
    ("POST", "/v2/models/other/infer", "tensor"),  # 404 of the protocol
    ("POST", "/v2/models/reid/infer", "text"),  # 400 of the protocol
    ("POST", "/v1/search", None),  # an ordinary route
]


def _send(client, method, url, body):
    content, headers = {
        "jpeg": (image_bytes((255, 0, 0)), {"Content-Type": "image/jpeg"}),
        "text": (b"not an image", {"Content-Type": "text/plain"}),
        "tensor": _tensor_request(),
        None: (None, {}),
    }[body]
    r = client.request(method, url, content=content, headers=headers)
    is_json = r.headers.get("content-type", "").startswith("application/json")
    body = r.json() if is_json and r.content else None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body["error"].pop("request_id", None)
    if isinstance(body, dict):
        body.pop("took_ms", None)
    return r.status_code, r.headers.get("allow"), body, r.content if body is None else None


def test_the_server_answers_every_request_as_without_the_middleware(tmp_path):
    """Status, Allow header and body of each request are the same with and without
    FastPathMiddleware; only the ordinary answers of fast-path routes skip the stack
    below it, and every request is still counted under its route template."""
    with_fast, below_fast = _server_client(tmp_path / "a", fast_path_middleware=True)
    without, _ = _server_client(tmp_path / "b", fast_path_middleware=False)
    try:
        for method, url, body in REQUESTS:
            assert _send(with_fast, method, url, body) == _send(without, method, url, body), url
        assert below_fast == [  # the router's answers, the declined request, ordinary routes
            "POST /v1/search/raw",  # k=abc
            "POST /v1/search/raw/",
            "GET /v1/search/raw",
            "HEAD /v1/search/raw",
            "POST /v1/search",
        ]
        text = with_fast.get("/metrics").text
    finally:
        with_fast.__exit__(None, None, None)
        without.__exit__(None, None, None)
    # k=2, and the trailing-slash request after the router's redirect (307, unmatched)
    assert 'reid_requests_total{protocol="http",route="/v1/search/raw",status="200"} 2.0' in text
    assert 'route="/v2/models/{name}/infer",status="200"} 1.0' in text


def test_nothing_but_http_is_offered(tmp_path):
    calls = []

    async def inner(scope, receive, send):
        calls.append(scope["type"])

    middleware = FastPathMiddleware(inner, routes=lambda: list(router.routes))
    asyncio.run(middleware({"type": "lifespan"}, None, None))
    assert calls == ["lifespan"]
