"""The typed client (``reid_client``): one contract over HTTP and gRPC, retries, no torch.

The clients run against the real FastAPI app and gRPC server in process, both over one
real ``SearchService`` with a real gallery (a colour-histogram runtime stands in for a
model), so every answer is parsed from what the server really sends.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import pytest_asyncio
from fastapi.testclient import TestClient
from server_fakes import DIM, ColourRuntime, image_bytes

from reid.gallery import Gallery
from reid_client import (
    AsyncReIDClient,
    AsyncReIDGrpcClient,
    ProtocolError,
    ReIDClient,
    ReIDGrpcClient,
    ServerError,
    ServerUnreachableError,
)
from reid_client import schemas as s
from server.grpc_api.server import launch_grpc_server
from server.http import create_app
from server.service import SearchService
from server.settings import ServerSettings

REPO = Path(__file__).resolve().parents[1]
KEY = "write-key"
RED, GREEN, BLUE = (250, 10, 10), (10, 250, 10), (10, 10, 250)
asyncio_test = pytest.mark.asyncio(loop_scope="function")


def png(colour: tuple[int, int, int]) -> bytes:
    return image_bytes(colour)


def make_service(directory: Path) -> tuple[SearchService, ServerSettings]:
    settings = ServerSettings(api_key=KEY, max_images=8, grpc=False)
    gallery = Gallery.open(directory, DIM, index="flat", background_rebuild=False)
    return SearchService(ColourRuntime(), gallery, settings), settings


@pytest.fixture
def http(tmp_path) -> Iterator[ReIDClient]:
    service, settings = make_service(tmp_path / "gallery")
    with TestClient(create_app(settings, service)) as test_client:
        yield ReIDClient("http://testserver", api_key=KEY, client=test_client)


@pytest_asyncio.fixture
async def grpc_target(tmp_path):
    service, settings = make_service(tmp_path / "gallery")
    await service.start()
    handle = await launch_grpc_server(service, settings, host="127.0.0.1", port=0)
    yield handle.target
    await handle.stop(None)
    await service.close()


# -- HTTP ----------------------------------------------------------------------------------


def test_every_http_answer_is_a_typed_model_of_the_contract(http):
    ids = http.add([png(RED), png(BLUE)], [{"camera": 0, "box": [0, 0, 5, 5]}, None])
    answer = http.search([png(RED)], k=2, query_cameras=[1])
    assert isinstance(answer, s.SearchResponse)
    assert [m.id for m in answer.results[0].matches] == ids
    assert answer.results[0].query_camera == 1 and answer.gallery_size == 2
    top = answer.results[0].matches[0]
    assert top.camera == 0 and top.box == [0, 0, 5, 5] and top.thumbnail_url
    assert http.thumbnail(top.id)[:2] == b"\xff\xd8"  # a JPEG
    assert http.get_entry(ids[0]).camera == 0
    embeddings = http.embed([png(RED), png(GREEN)])
    assert embeddings.shape == (2, DIM) and embeddings.dtype == np.float32
    stats = http.stats()
    assert isinstance(stats, s.GalleryStats) and stats.size == 2 and stats.cameras == {0: 1}
    info = http.model_info()
    assert isinstance(info, s.ModelInfo) and info.model.embedding_dim == DIM
    assert info.limits.max_images == 8 and info.auth.writes_need_key
    assert info.model.export_dir is None  # not exposed unless the operator allows it
    assert http.delete([ids[1], 999]) == s.DeleteManyResponse(deleted=[ids[1]], missing=[999])


def test_search_params_are_checked_before_anything_is_sent(http):
    with pytest.raises(ValueError, match="time_from"):
        http.search([png(RED)], time_from=5.0, time_to=1.0)
    with pytest.raises(ValueError, match="exclude_same_camera needs query_cameras"):
        http.search([png(RED)], exclude_same_camera=True)
    with pytest.raises(ValueError, match="1 metadata entries for 2 images"):
        http.add([png(RED), png(BLUE)], [{"camera": 0}])


def test_a_refusal_is_a_server_error_with_the_servers_status_and_type(http):
    anonymous = ReIDClient("http://testserver", client=http._client)
    with pytest.raises(ServerError, match="HTTP 401") as caught:
        anonymous.add([png(RED)])
    assert caught.value.status == 401 and caught.value.error_type == "UnauthorizedError"
    with pytest.raises(ServerError) as caught:
        http.search([b"not an image"])
    assert caught.value.status == 400 and "image 0" in str(caught.value)


def test_http_client_lists_the_gallery_page_by_page(http):
    ids = http.add(
        [png(RED), png(GREEN), png(BLUE)],
        [{"camera": 0, "timestamp": 1.0}, {"camera": 1, "timestamp": 2.0}, {"camera": 1}],
    )
    page = http.list_gallery(limit=2)
    assert isinstance(page, s.GalleryPage)
    assert [e.id for e in page.entries] == ids[:2] and (page.total, page.limit) == (3, 2)
    assert page.entries[0] == http.get_entry(ids[0])
    assert [e.id for e in http.list_gallery(offset=2, limit=2).entries] == ids[2:]
    assert http.list_gallery(offset=5).entries == []
    assert [e.id for e in http.list_gallery(cameras=[1]).entries] == ids[1:]
    assert http.list_gallery(cameras=[1], time_from=1.5).total == 1


def test_http_client_searches_by_entry_without_the_entry_itself(http):
    red, green, red_too = http.add(
        [png(RED), png(GREEN), png((240, 20, 20))], [{"camera": 0}, {"camera": 1}, {"camera": 0}]
    )
    answer = http.search_by_entry(red, k=5)
    assert isinstance(answer, s.SearchResponse) and answer.results[0].query_camera == 0
    assert [m.id for m in answer.results[0].matches] == [red_too, green]
    same_camera = http.search_by_entry(red, s.EntrySearchParams(exclude_same_camera=True))
    assert [m.id for m in same_camera.results[0].matches] == [green]
    with pytest.raises(ServerError) as caught:
        http.search_by_entry(12345)
    assert caught.value.status == 404 and caught.value.error_type == "NotFoundError"


def test_page_and_entry_search_params_are_checked_before_anything_is_sent(http):
    for bad in ({"limit": 1001}, {"limit": 0}, {"offset": -1}, {"time_from": 2, "time_to": 1}):
        with pytest.raises(ValueError, match=r"limit|offset|time_from"):
            http.list_gallery(**bad)
    with pytest.raises(ValueError, match="time_from"):
        http.search_by_entry(1, time_from=5.0, time_to=1.0)
    with pytest.raises(ValueError, match="query_cameras"):
        http.search_by_entry(1, query_cameras=[0])  # the entry's camera is the query's
    with pytest.raises(TypeError, match="either params= or search keywords"):
        http.search_by_entry(1, s.EntrySearchParams(), k=3)


@asyncio_test
async def test_the_four_clients_page_and_search_by_entry_alike(tmp_path):
    service, settings = make_service(tmp_path / "gallery")
    app = create_app(settings, service, own_service=False)
    await service.start()
    handle = await launch_grpc_server(service, settings, host="127.0.0.1", port=0)
    transport = httpx.ASGITransport(app=app)
    web = httpx.AsyncClient(transport=transport, base_url="http://testserver")
    try:
        async with AsyncReIDClient("http://testserver", api_key=KEY, client=web) as client:
            ids = await client.add(
                [png(RED), png(GREEN), png((240, 20, 20)), png(BLUE)],
                [{"camera": 0, "timestamp": 1.0, "extra": {"n": 1}}, {"camera": 1}, {}, None],
            )
            pages = [await client.list_gallery(offset=1, limit=2)]
            searches = [await client.search_by_entry(ids[0], full_ranking=True)]
        async with AsyncReIDGrpcClient(handle.target, api_key=KEY) as client:
            pages.append(await client.list_gallery(offset=1, limit=2))
            searches.append(await client.search_by_entry(ids[0], full_ranking=True))

        def blocking() -> tuple:
            with ReIDGrpcClient(handle.target, api_key=KEY) as client:
                return client.list_gallery(1, 2), client.search_by_entry(ids[0], full_ranking=True)

        page, answer = await asyncio.to_thread(blocking)
        pages.append(page)
        searches.append(answer)
        with TestClient(create_app(settings, service, own_service=False)) as test_client:
            blocking_http = ReIDClient("http://testserver", api_key=KEY, client=test_client)
            pages.append(blocking_http.list_gallery(offset=1, limit=2))
            searches.append(blocking_http.search_by_entry(ids[0], full_ranking=True))
    finally:
        await handle.stop(None)
        await service.close()

    assert [e.id for e in pages[0].entries] == ids[1:3] and pages[0].total == 4
    assert all(p == pages[0] for p in pages), pages
    results = [a.results for a in searches]
    assert results[0][0].query_camera == 0
    matched = [m.id for m in results[0][0].matches]
    assert matched[0] == ids[2] and sorted(matched) == ids[1:]  # the entry itself left out
    assert all(r == results[0] for r in results), results


@asyncio_test
async def test_async_http_client_has_the_same_methods(tmp_path):
    service, settings = make_service(tmp_path / "gallery")
    app = create_app(settings, service)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with AsyncReIDClient(
            "http://testserver",
            api_key=KEY,
            client=httpx.AsyncClient(transport=transport, base_url="http://testserver"),
        ) as client:
            assert await client.is_ready()
            (red,) = await client.add([png(RED)], [{"camera": 3}])
            answer = await client.search([png(RED)], k=1)
            assert answer.results[0].matches[0].id == red
            assert (await client.stats()).cameras == {3: 1}
            assert (await client.model_info()).model.name == "colour-fake"


# -- retries and failures ------------------------------------------------------------------


def scripted(*statuses: int, body: bytes = b'{"size": 0}') -> tuple[httpx.Client, list[str]]:
    """An httpx client whose server answers ``statuses`` in turn (then 200 with ``body``)."""
    seen: list[str] = []
    queue = list(statuses)

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        status = queue.pop(0) if queue else 200
        content = body if status == 200 else b'{"error": {"type": "Busy", "message": "later"}}'
        return httpx.Response(status, content=content, headers={"retry-after": "0"})

    return httpx.Client(transport=httpx.MockTransport(answer), base_url="http://x"), seen


def test_a_503_is_retried_until_the_server_answers():
    stats = b'{"size": 0, "dim": 8, "index": "flat", "index_requested": "auto"}'
    client, seen = scripted(503, 503, body=stats)
    answer = ReIDClient("http://x", client=client, retries=2, backoff=0).stats()
    assert answer.size == 0 and len(seen) == 3


def test_retries_give_up_with_the_servers_last_answer():
    client, seen = scripted(503, 503, 503)
    with pytest.raises(ServerError, match="HTTP 503: Busy: later") as caught:
        ReIDClient("http://x", client=client, retries=1, backoff=0).stats()
    assert caught.value.status == 503 and len(seen) == 2


def test_a_readiness_probe_is_not_retried():
    client, seen = scripted(503)
    assert ReIDClient("http://x", client=client, backoff=0).is_ready() is False
    assert seen == ["/readyz"]


def test_a_timed_out_add_is_not_sent_twice_but_a_timed_out_search_is():
    attempts: list[str] = []

    def slow(request: httpx.Request) -> httpx.Response:
        attempts.append(request.url.path)
        raise httpx.ReadTimeout("slow", request=request)

    client = httpx.Client(transport=httpx.MockTransport(slow), base_url="http://x")
    reid = ReIDClient("http://x", client=client, retries=2, backoff=0)
    with pytest.raises(ServerUnreachableError, match="timed out"):
        reid.add([png(RED)])
    assert attempts == ["/v1/gallery"]
    attempts.clear()
    with pytest.raises(ServerUnreachableError):
        reid.search([png(RED)])
    assert attempts == ["/v1/search"] * 3


def test_an_answer_outside_the_contract_is_a_protocol_error():
    client, _ = scripted(body=b'{"count": 3}')  # not a GalleryStats
    with pytest.raises(ProtocolError, match="not a GalleryStats"):
        ReIDClient("http://x", client=client).stats()


# -- gRPC ----------------------------------------------------------------------------------


@asyncio_test
async def test_blocking_grpc_client_answers_with_the_same_models(grpc_target):
    def session() -> tuple:
        with ReIDGrpcClient(grpc_target, api_key=KEY) as client:
            ids = client.add([png(RED), png(BLUE)], [{"camera": 0, "box": [0, 0, 5, 5]}, None])
            ranking = client.search([png(RED)], full_ranking=True)
            embeddings = client.embed([png(RED)])
            deleted = client.delete([ids[1], 12345], allow_missing=True)
            return ids, ranking, embeddings, deleted, client.stats(), client.model_info()

    ids, ranking, embeddings, deleted, stats, info = await asyncio.to_thread(session)
    assert isinstance(ranking, s.SearchResponse)
    assert [m.id for m in ranking.results[0].matches] == ids
    assert ranking.results[0].matches[0].box == [0, 0, 5, 5]
    assert embeddings.shape == (1, DIM) and embeddings.dtype == np.float32
    assert deleted == s.DeleteManyResponse(deleted=[ids[1]], missing=[12345])
    assert isinstance(stats, s.GalleryStats) and stats.size == 1
    assert isinstance(info, s.ModelInfo) and info.model.name == "colour-fake"


@asyncio_test
async def test_async_grpc_client_searches_by_embeddings_with_filters(grpc_target):
    async with AsyncReIDGrpcClient(grpc_target, api_key=KEY) as client:
        _red, green = await client.add([png(RED), png(GREEN)], [{"camera": 0}, {"camera": 1}])
        query = await client.embed([png(RED)])
        answer = await client.search(
            embeddings=query, query_cameras=[0], exclude_same_camera=True, k=5
        )
    assert [m.id for m in answer.results[0].matches] == [green]
    assert answer.results[0].query_camera == 0


@asyncio_test
async def test_grpc_refusals_are_server_errors_with_the_http_status(grpc_target):
    async with AsyncReIDGrpcClient(grpc_target) as anonymous:
        with pytest.raises(ServerError) as caught:
            await anonymous.add([png(RED)])
    assert caught.value.grpc_code == "UNAUTHENTICATED" and caught.value.status == 401


def test_an_unreachable_grpc_server_is_retried_then_reported():
    client = ReIDGrpcClient("127.0.0.1:1", timeout=2, retries=1, backoff=0)
    with client, pytest.raises(ServerUnreachableError, match="UNAVAILABLE"):
        client.stats()


# -- installs without torch ----------------------------------------------------------------

NO_TORCH = textwrap.dedent(
    """
    import sys

    class Refuse:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"torch", "reid", "server", "gallery", "trainer",
                                      "export", "fastapi", "faiss", "onnxruntime", "cv2"}:
                raise ImportError(f"{name} must not be imported by reid_client")

    sys.meta_path.insert(0, Refuse())
    import httpx
    import reid_client
    from reid_client import ReIDClient, ReIDGrpcClient, schemas

    def answer(request):
        return httpx.Response(200, json={"results": [{"query_index": 0, "matches": [
            {"id": 7, "score": 0.5}]}], "gallery_size": 1, "took_ms": 1.0})

    http = httpx.Client(transport=httpx.MockTransport(answer), base_url="http://x")
    found = ReIDClient("http://x", client=http).search([b"jpeg"], k=1)
    assert found.results[0].matches[0].id == 7
    ReIDGrpcClient("127.0.0.1:1").close()
    print("ok", sorted({m.split(".")[0] for m in sys.modules if m.startswith("reid")}))
    """
)


def test_the_client_imports_and_runs_with_torch_and_the_library_refused():
    proc = subprocess.run(
        [sys.executable, "-c", NO_TORCH], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith("ok ['reid_client'")


@pytest.mark.slow
def test_the_client_distribution_installs_alone_in_a_fresh_venv(tmp_path):
    """``pip install ./client`` into a venv with no torch: the package a user installs."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(REPO / "client")],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    if install.returncode != 0 and "No matching distribution" in install.stderr:
        pytest.skip(f"no package index reachable: {install.stderr[-300:]}")
    assert install.returncode == 0, install.stderr[-2000:]
    run = subprocess.run(
        [str(python), "-c", NO_TORCH], capture_output=True, text=True, timeout=120, env=env,
        cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "ok ['reid_client']" in run.stdout
    freeze = subprocess.run([str(python), "-m", "pip", "freeze"], capture_output=True, text=True)
    assert "torch" not in freeze.stdout.lower()
