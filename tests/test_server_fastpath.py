"""``FastPathMiddleware``: requests for fast-path routes skip the ASGI stack below it,
choose the route the router would, and fall through intact when declined."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from server_fakes import image_bytes

from server.errors import BadInputError
from server.routes.fastpath import FastPathMiddleware, FastPathRoute, fast_path

router = APIRouter(route_class=FastPathRoute)
seen: dict[str, object] = {}


async def _hot_fast(request: Request) -> JSONResponse | None:
    if request.headers.get("x-decline"):
        if request.headers.get("x-read-first"):
            await request.body()
        return None
    if request.headers.get("x-refuse"):
        raise BadInputError("refused by the fast path")
    seen["route"] = request.scope["route"].path
    body = await request.body()
    return JSONResponse({"by": "fast", "n": request.path_params["n"], "bytes": len(body)})


@router.post("/items/special")
async def special() -> dict:
    return {"by": "ordinary special"}


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
    assert client.post("/items/special").json() == {"by": "ordinary special"}
    assert client.get("/items/7").status_code == 405  # another method: the router's answer
    assert client.post("/nowhere").status_code == 404
    assert below == ["/items/special", "/items/7", "/nowhere"]


def test_a_declined_request_goes_on_with_its_body():
    app, below = make_app()
    client = TestClient(app)
    for headers in ({"x-decline": "1"}, {"x-decline": "1", "x-read-first": "1"}):
        r = client.post("/items/3", content=b"hello", headers=headers)
        assert r.json() == {"by": "ordinary", "n": 3, "bytes": 5}
    assert below == ["/items/3", "/items/3"]


def test_a_service_error_answers_as_the_apps_handler_does():
    app, _ = make_app()
    r = TestClient(app).post("/items/1", headers={"x-refuse": "1"})
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "BadInputError"
    assert r.json()["error"]["message"] == "refused by the fast path"


def test_the_servers_hot_routes_take_the_fast_path(tmp_path):
    """In the real app the raw search and the KServe infer route are fast-path routes,
    and their requests are still counted under their route templates."""
    from test_server_http import RAW, make_client, populate

    with make_client(tmp_path) as client:
        populate(client)
        middleware = next(m for m in client.app.user_middleware if m.cls is FastPathMiddleware)
        table = FastPathMiddleware(None, **middleware.kwargs).table()
        hot = {route.path for route, fast in table if fast}
        assert hot >= {"/v1/search/raw", "/v2/models/{name}/infer"}
        r = client.post("/v1/search/raw?k=2", content=image_bytes((255, 0, 0)), headers=RAW)
        assert r.status_code == 200
        text = client.get("/metrics").text
    assert 'reid_requests_total{protocol="http",route="/v1/search/raw",status="200"} 1.0' in text


def test_nothing_but_http_is_offered(tmp_path):
    calls = []

    async def inner(scope, receive, send):
        calls.append(scope["type"])

    middleware = FastPathMiddleware(inner, routes=lambda: list(router.routes))
    asyncio.run(middleware({"type": "lifespan"}, None, None))
    assert calls == ["lifespan"]
