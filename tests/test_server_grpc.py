"""gRPC front end: a real grpc.aio server on 127.0.0.1, called through stubs built from reid.proto.

Two back ends stand behind the server:

* ``RecordingService``, a fake of the ``SearchService`` contract that records what the
  servicer asks of it and fails on demand: it pins down the request/reply translation,
  the error mapping, the auth header and the health status;
* the real ``SearchService`` with a colour-mean runtime and a real on-disk ``Gallery``:
  every RPC end to end and each bad input of the issue, after which the server must
  still answer.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import socket
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import SimpleNamespace

import grpc
import httpx
import numpy as np
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image
from server_fakes import DIM, ColourRuntime, image_bytes

from reid.gallery import Entry, EntryMetadata, EntryPage, Gallery, Match
from reid_client.proto import reid_pb2, reid_pb2_grpc
from reid_client.schemas import GalleryStats, ModelInfo
from server import errors
from server.grpc_api.server import launch_grpc_server, start_grpc_server
from server.grpc_api.servicer import api_key_from_metadata
from server.http import create_app
from server.service import SearchOptions, SearchService
from server.settings import ServerSettings

REPO = Path(__file__).resolve().parents[1]
RED, GREEN, BLUE = (250, 10, 10), (10, 250, 10), (10, 10, 250)
WRITE_KEY, READ_KEY = "write-s3cret", "read-s3cret"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE = "reid.v1.ReIDService"
HEALTH_POLL = 0.02

asyncio_test = pytest.mark.asyncio


# -- helpers ---------------------------------------------------------------------------------


async def rpc_error(call) -> grpc.aio.AioRpcError:
    """The error a call fails with (the test fails if it succeeds)."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


def png(colour=RED) -> bytes:
    return image_bytes(colour)


def truncated_jpeg() -> bytes:
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="JPEG", quality=95)
    data = buffer.getvalue()
    return data[: len(data) // 2]


@cache
def huge_png(width: int = 20000, height: int = 20000) -> bytes:
    """A valid 1-bit black PNG of ``width`` x ``height`` (about 50 kB on disk)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed pixels
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row * 1000) for _ in range(height // 1000)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


def search_request(*images: bytes, **fields) -> reid_pb2.SearchRequest:
    return reid_pb2.SearchRequest(
        queries=[reid_pb2.QueryImage(image=im) for im in images], **fields
    )


def entry(image: bytes, **metadata) -> reid_pb2.GalleryEntry:
    extra = metadata.pop("extra", None)
    metadata.setdefault("extra_json", "" if extra is None else json.dumps(extra))
    box = metadata.pop("box", None)
    meta = reid_pb2.EntryMetadata(
        **metadata,
        box=None if box is None else reid_pb2.Box(x=box[0], y=box[1], w=box[2], h=box[3]),
    )
    return reid_pb2.GalleryEntry(image=image, metadata=meta)


def key(value: str) -> tuple[tuple[str, str], ...]:
    return (("x-api-key", value),)


@dataclass
class Env:
    """A running server and stubs on one channel."""

    service: object
    stub: reid_pb2_grpc.ReIDServiceStub
    health: health_pb2_grpc.HealthStub
    channel: grpc.aio.Channel
    target: str


async def serve(service, settings=None):
    """Start a server on a free port; returns (handle, env)."""
    handle = await launch_grpc_server(
        service, settings, host="127.0.0.1", port=0, health_interval=HEALTH_POLL
    )
    channel = grpc.aio.insecure_channel(handle.target)
    env = Env(
        service=service,
        stub=reid_pb2_grpc.ReIDServiceStub(channel),
        health=health_pb2_grpc.HealthStub(channel),
        channel=channel,
        target=handle.target,
    )
    return handle, env


async def health_status(env: Env, service: str = "") -> int:
    reply = await env.health.Check(health_pb2.HealthCheckRequest(service=service))
    return reply.status


async def wait_for_health(env: Env, status: int) -> None:
    for _ in range(100):
        if await health_status(env, SERVICE) == status:
            return
        await asyncio.sleep(HEALTH_POLL)
    raise AssertionError(f"health never became {status}")


# -- a recording fake of the SearchService contract ---------------------------------------------

FAKE_STATS = GalleryStats(size=3, dim=4, index="flat", index_requested="auto", cameras={0: 2, 1: 1})
FAKE_INFO = ModelInfo.model_validate(
    {
        "model": {"name": "fake-net", "embedding_dim": 4, "input_size": [32, 16]},
        "runtime": {
            "runtime": "fake", "device": "cpu", "model": "fake-net", "embedding_dim": 4,
            "input_size": [32, 16], "threads": 2,  # runtimes may add fields
        },
        **ServerSettings().public_summary(),
    }
)  # fmt: skip
FULL_META = EntryMetadata(
    camera=2, timestamp=12.5, track=7, box=(1, 2, 30, 60), source="cam2.mp4", extra={"a": 1}
)
BARE_META = EntryMetadata()


class RecordingService:
    """Answers every call with canned data, records it, and raises ``fail`` when set."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.fail: BaseException | None = None
        self.ready = True
        self.keys: list[tuple[str | None, bool]] = []
        self.known_ids = {1, 2, 3}

    def _record(self, *call) -> None:
        self.calls.append(call)
        if self.fail is not None:
            raise self.fail

    async def embed(self, images):
        self._record("embed", list(images))
        return np.arange(len(images) * 4, dtype=np.float32).reshape(len(images), 4)

    def _matches(self, count: int, options: SearchOptions) -> list[list[Match]]:
        matches = [Match(5, 0.9, FULL_META, True), Match(6, 0.5, BARE_META, False)]
        return [matches[: options.k] for _ in range(count)]

    async def search(self, images, options):
        self._record("search", list(images), options)
        return self._matches(len(images), options)

    async def search_embeddings(self, embeddings, options):
        self._record("search_embeddings", np.asarray(embeddings), options)
        return self._matches(len(embeddings), options)

    async def add(self, images, metadata):
        self._record("add", list(images), list(metadata))
        return list(range(100, 100 + len(images)))

    async def delete(self, ids):
        self._record("delete", list(ids))
        return [i for i in ids if i in self.known_ids], [i for i in ids if i not in self.known_ids]

    async def stats(self) -> GalleryStats:
        self._record("stats")
        return FAKE_STATS

    async def list_entries(self, offset, limit, *, cameras, time_from, time_to):
        self._record("list_entries", offset, limit, cameras, time_from, time_to)
        entries = [Entry(7, FULL_META, True, 1700.5), Entry(9, BARE_META, False, 1701.0)]
        return EntryPage(entries=entries, total=12, offset=offset, limit=limit)

    async def search_by_entry(self, entry_id, options):
        self._record("search_by_entry", entry_id, options)
        if entry_id not in self.known_ids:
            raise errors.NotFoundError(f"no gallery entry with id {entry_id}")
        return Entry(entry_id, FULL_META, True, 0.0), self._matches(1, options)[0]

    def model_info(self) -> ModelInfo:
        self._record("model_info")
        return FAKE_INFO

    def is_ready(self):
        return self.ready

    def authorize(self, key, *, write):
        self.keys.append((key, write))
        if write and key is None:
            raise errors.UnauthorizedError("an API key is required for writing to the gallery")
        if write and key != WRITE_KEY:
            raise errors.ForbiddenError("the API key is not valid for writing to the gallery")


@pytest_asyncio.fixture
async def fake():
    service = RecordingService()
    handle, env = await serve(service)
    yield env
    await env.channel.close()
    await handle.stop(None)


def last_call(env: Env) -> tuple:
    return env.service.calls[-1]


# -- request translation (fake service) ----------------------------------------------------------


@asyncio_test
async def test_search_passes_k_filters_and_query_cameras_to_the_service(fake):
    request = search_request(png(), png(GREEN), k=3)
    request.queries[0].camera = 1
    request.filters.CopyFrom(
        reid_pb2.SearchFilters(
            include_cameras=[1, 2],
            exclude_cameras=[3],
            time_from=10.0,
            time_to=20.0,
            min_score=0.25,
            exclude_same_camera=True,
        )
    )
    await fake.stub.Search(request)

    name, images, options = last_call(fake)
    assert name == "search" and images == [png(), png(GREEN)]
    assert options.k == 3
    assert options.query_cameras == [1, None]
    assert options.exclude_same_camera is True
    f = options.filters
    assert (f.include_cameras, f.exclude_cameras) == ({1, 2}, {3})
    assert (f.time_from, f.time_to, f.min_score) == (10.0, 20.0, 0.25)


@asyncio_test
async def test_search_defaults_to_k_10_all_cameras_and_no_query_cameras(fake):
    await fake.stub.Search(search_request(png()))

    _, _, options = last_call(fake)
    assert options.k == 10
    assert options.filters.include_cameras is None  # empty list = every camera
    assert options.filters.exclude_cameras == frozenset()
    assert options.query_cameras is None
    assert (options.filters.time_from, options.filters.min_score) == (None, None)


@asyncio_test
async def test_full_ranking_asks_the_service_for_k_none(fake):
    await fake.stub.Search(search_request(png(), full_ranking=True))
    assert last_call(fake)[2].k is None


@asyncio_test
async def test_search_by_embeddings_calls_search_embeddings(fake):
    request = reid_pb2.SearchRequest(
        embeddings=[reid_pb2.QueryEmbedding(values=[1, 0, 0, 0], camera=4)], k=1
    )
    reply = await fake.stub.Search(request)

    name, embeddings, options = last_call(fake)
    assert name == "search_embeddings"
    np.testing.assert_array_equal(embeddings, [[1, 0, 0, 0]])
    assert embeddings.dtype == np.float32
    assert options.query_cameras == [4]
    assert [m.id for m in reply.results[0].matches] == [5]


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (search_request(png(), k=3, full_ranking=True), "either k or full_ranking"),
        (reid_pb2.SearchRequest(), "no query"),
        (
            reid_pb2.SearchRequest(
                queries=[reid_pb2.QueryImage(image=b"x")],
                embeddings=[reid_pb2.QueryEmbedding(values=[1.0])],
            ),
            "not both",
        ),
        (
            reid_pb2.SearchRequest(
                embeddings=[
                    reid_pb2.QueryEmbedding(values=[1.0, 2.0]),
                    reid_pb2.QueryEmbedding(values=[1.0]),
                ]
            ),
            "one length",
        ),
        (
            search_request(png(), filters=reid_pb2.SearchFilters(time_from=float("nan"))),
            "time_from must be finite, got nan",
        ),
    ],
    ids=["k-and-full-ranking", "no-query", "images-and-embeddings", "ragged", "bad-filter"],
)
@asyncio_test
async def test_malformed_search_requests_are_invalid_argument(fake, request_, message):
    error = await rpc_error(fake.stub.Search(request_))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.details()


@asyncio_test
async def test_a_match_carries_its_metadata_and_thumbnail_url(fake):
    reply = await fake.stub.Search(search_request(png()))

    full, bare = reply.results[0].matches
    assert (full.id, full.score) == (5, pytest.approx(0.9))
    assert (full.camera, full.timestamp, full.track, full.source) == (2, 12.5, 7, "cam2.mp4")
    assert (full.box.x, full.box.y, full.box.w, full.box.h) == (1, 2, 30, 60)
    assert full.thumbnail_url == "/v1/gallery/5/thumbnail"
    assert json.loads(full.extra_json) == {"a": 1}
    # Missing metadata is unset, not zero; no thumbnail means an empty URL.
    for name in ("camera", "timestamp", "track", "box", "source"):
        assert not bare.HasField(name), name
    assert bare.thumbnail_url == ""
    assert json.loads(bare.extra_json) == {}


@asyncio_test
async def test_one_result_list_per_query_in_request_order(fake):
    reply = await fake.stub.Search(search_request(png(), png(GREEN), png(BLUE), k=1))
    assert [len(r.matches) for r in reply.results] == [1, 1, 1]


@asyncio_test
async def test_embed_returns_dim_and_one_embedding_per_image(fake):
    reply = await fake.stub.Embed(reid_pb2.EmbedRequest(images=[png(), png(GREEN)]))
    assert reply.dim == 4
    assert [list(e.values) for e in reply.embeddings] == [[0, 1, 2, 3], [4, 5, 6, 7]]


@asyncio_test
async def test_add_converts_each_entry_metadata(fake):
    request = reid_pb2.AddToGalleryRequest(
        entries=[
            entry(
                png(),
                camera=2,
                timestamp=12.5,
                track=7,
                box=(1, 2, 30, 60),
                source="cam2.mp4",
                extra={"a": 1},
            ),
            entry(png(GREEN)),
        ]
    )
    reply = await fake.stub.AddToGallery(request, metadata=key(WRITE_KEY))

    assert list(reply.ids) == [100, 101]
    _, images, metadata = last_call(fake)
    assert images == [png(), png(GREEN)]
    assert metadata == [FULL_META, BARE_META]


@pytest.mark.parametrize(
    ("bad_entry", "message"),
    [
        (entry(png(), extra_json="{oops"), "entries[0].metadata.extra_json is not valid JSON"),
        (entry(png(), extra_json="[1, 2]"), "must be a JSON object"),
        (
            entry(png(), camera=-3),
            "entries[0].metadata: camera must be between 0 and 2147483647",
        ),
        (entry(png(), timestamp=float("nan")), "timestamp must be finite"),
    ],
    ids=["extra-not-json", "extra-not-object", "negative-camera", "nan-timestamp"],
)
@asyncio_test
async def test_bad_metadata_is_invalid_argument_naming_the_field(fake, bad_entry, message):
    request = reid_pb2.AddToGalleryRequest(entries=[bad_entry])
    error = await rpc_error(fake.stub.AddToGallery(request, metadata=key(WRITE_KEY)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.details()
    assert not [c for c in fake.service.calls if c[0] == "add"]


@asyncio_test
async def test_add_without_entries_is_invalid_argument(fake):
    error = await rpc_error(
        fake.stub.AddToGallery(reid_pb2.AddToGalleryRequest(), metadata=key(WRITE_KEY))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "no entries" in error.details()


@asyncio_test
async def test_delete_reports_deleted_ids(fake):
    request = reid_pb2.DeleteFromGalleryRequest(ids=[1, 3])
    reply = await fake.stub.DeleteFromGallery(request, metadata=key(WRITE_KEY))
    assert (list(reply.deleted), list(reply.missing)) == ([1, 3], [])


@asyncio_test
async def test_delete_of_an_unknown_id_is_not_found_unless_allow_missing(fake):
    request = reid_pb2.DeleteFromGalleryRequest(ids=[1, 42])
    error = await rpc_error(fake.stub.DeleteFromGallery(request, metadata=key(WRITE_KEY)))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "no gallery entry with id 42" in error.details()
    assert "the other 1 ids were deleted" in error.details()

    request.allow_missing = True
    reply = await fake.stub.DeleteFromGallery(request, metadata=key(WRITE_KEY))
    assert list(reply.missing) == [42]


@asyncio_test
async def test_stats_and_model_info_carry_the_typed_models_as_json(fake):
    stats = await fake.stub.GalleryStats(reid_pb2.GalleryStatsRequest())
    assert (stats.size, stats.dim) == (3, 4)
    assert GalleryStats.model_validate_json(stats.stats_json) == FAKE_STATS

    info = await fake.stub.ModelInfo(reid_pb2.ModelInfoRequest())
    assert (info.name, info.dim) == ("fake-net", 4)
    parsed = ModelInfo.model_validate_json(info.info_json)
    assert parsed == FAKE_INFO and parsed.runtime.model_extra == {"threads": 2}


# -- errors and auth (fake service) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("error_class", "code"),
    [
        (errors.BadInputError, grpc.StatusCode.INVALID_ARGUMENT),
        (errors.PayloadTooLargeError, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.UnsupportedMediaError, grpc.StatusCode.INVALID_ARGUMENT),
        (errors.NotFoundError, grpc.StatusCode.NOT_FOUND),
        (errors.UnauthorizedError, grpc.StatusCode.UNAUTHENTICATED),
        (errors.ForbiddenError, grpc.StatusCode.PERMISSION_DENIED),
        (errors.NotReadyError, grpc.StatusCode.UNAVAILABLE),
        (errors.ServiceError, grpc.StatusCode.INTERNAL),
    ],
)
@asyncio_test
async def test_a_service_error_becomes_its_status_with_its_message(fake, error_class, code):
    fake.service.fail = error_class("the service says no")
    error = await rpc_error(fake.stub.Embed(reid_pb2.EmbedRequest(images=[png()])))
    assert (error.code(), error.details()) == (code, "the service says no")


@asyncio_test
async def test_an_unexpected_exception_is_internal_logged_and_the_server_keeps_serving(
    fake, caplog
):
    fake.service.fail = ZeroDivisionError("secret internals")
    with caplog.at_level(logging.ERROR, logger="server.grpc"):
        error = await rpc_error(fake.stub.Search(search_request(png())))
    assert error.code() == grpc.StatusCode.INTERNAL
    assert re.fullmatch(
        r"Search failed on the server \(see the server log, request id \w+\)", error.details()
    )
    assert "secret" not in error.details()
    assert "ZeroDivisionError" in caplog.text

    fake.service.fail = None
    assert (await fake.stub.GalleryStats(reid_pb2.GalleryStatsRequest())).size == 3


@asyncio_test
async def test_writes_check_the_key_reads_pass_it_on(fake):
    add = reid_pb2.AddToGalleryRequest(entries=[entry(png())])

    error = await rpc_error(fake.stub.AddToGallery(add))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    error = await rpc_error(fake.stub.AddToGallery(add, metadata=key("wrong")))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    bearer = (("authorization", f"Bearer {WRITE_KEY}"),)
    assert list((await fake.stub.AddToGallery(add, metadata=bearer)).ids) == [100]

    await fake.stub.GalleryStats(reid_pb2.GalleryStatsRequest(), metadata=key(READ_KEY))
    assert fake.service.keys == [
        (None, True), ("wrong", True), (WRITE_KEY, True), (READ_KEY, False)
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ([("x-api-key", "k1")], "k1"),
        ([("authorization", "Bearer k2")], "k2"),
        ([("authorization", "bearer  k3 ")], "k3"),
        ([("authorization", "Basic abc")], None),
        ([("x-api-key", "")], None),
        ([("authorization", "Bearer b"), ("x-api-key", "x")], "x"),
        ([("user-agent", "grpc")], None),
        (None, None),
    ],
)
def test_api_key_comes_from_x_api_key_or_a_bearer_token(metadata, expected):
    assert api_key_from_metadata(metadata) == expected


# -- health, reflection, server options ----------------------------------------------------------


@asyncio_test
async def test_health_follows_service_readiness(fake):
    assert await health_status(fake) == SERVING
    assert await health_status(fake, SERVICE) == SERVING

    fake.service.ready = False
    await wait_for_health(fake, NOT_SERVING)
    assert await health_status(fake) == NOT_SERVING

    fake.service.ready = True
    await wait_for_health(fake, SERVING)


@asyncio_test
async def test_health_of_an_unknown_service_is_not_found(fake):
    error = await rpc_error(fake.health.Check(health_pb2.HealthCheckRequest(service="nope")))
    assert error.code() == grpc.StatusCode.NOT_FOUND


@asyncio_test
async def test_reflection_lists_the_reid_and_health_services(fake):
    stub = reflection_pb2_grpc.ServerReflectionStub(fake.channel)
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE),
    ]
    replies = [reply async for reply in stub.ServerReflectionInfo(iter(requests))]

    names = {s.name for s in replies[0].list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health"} <= names
    (proto_file,) = replies[1].file_descriptor_response.file_descriptor_proto
    assert b"ReIDService" in proto_file and b"reid/v1/reid.proto" in proto_file


@asyncio_test
async def test_a_message_over_the_size_limit_is_resource_exhausted():
    settings = SimpleNamespace(host="ignored", grpc_port=1, max_body_mb=0.5)  # 1.5 MiB limit
    handle, env = await serve(RecordingService(), settings)
    try:
        error = await rpc_error(env.stub.Embed(reid_pb2.EmbedRequest(images=[b"x" * 2_000_000])))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        reply = await env.stub.Embed(reid_pb2.EmbedRequest(images=[b"x" * 1_000_000]))
        assert reply.dim == 4
    finally:
        await env.channel.close()
        await handle.stop(None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@asyncio_test
async def test_start_grpc_server_listens_on_the_settings_host_and_port():
    settings = SimpleNamespace(host="127.0.0.1", grpc_port=free_port())
    server = await start_grpc_server(RecordingService(), settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{settings.grpc_port}") as channel:
            stub = reid_pb2_grpc.ReIDServiceStub(channel)
            assert (await stub.GalleryStats(reid_pb2.GalleryStatsRequest())).size == 3
    finally:
        await server.stop(None)


@asyncio_test
async def test_binding_a_port_in_use_raises_oserror():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(OSError, match="cannot bind the gRPC server"):
            await launch_grpc_server(RecordingService(), host="127.0.0.1", port=port)


# -- gallery pages and search by entry (fake service) -------------------------------------------


@asyncio_test
async def test_list_gallery_defaults_to_the_first_50_entries_of_every_camera(fake):
    reply = await fake.stub.ListGallery(reid_pb2.ListGalleryRequest())
    assert last_call(fake) == ("list_entries", 0, 50, None, None, None)
    assert (reply.total, reply.offset, reply.limit) == (12, 0, 50)
    first, second = reply.entries
    assert (first.id, first.created, first.thumbnail_url) == (7, 1700.5, "/v1/gallery/7/thumbnail")
    meta = first.metadata
    assert (meta.camera, meta.timestamp, meta.track, meta.source) == (2, 12.5, 7, "cam2.mp4")
    assert (meta.box.x, meta.box.y, meta.box.w, meta.box.h) == (1, 2, 30, 60)
    assert json.loads(meta.extra_json) == {"a": 1}
    assert second.thumbnail_url == "" and not second.metadata.HasField("camera")


@asyncio_test
async def test_list_gallery_passes_the_page_and_filters_to_the_service(fake):
    request = reid_pb2.ListGalleryRequest(
        offset=20, limit=10, cameras=[1, 3], time_from=2.0, time_to=9.5
    )
    await fake.stub.ListGallery(request)
    assert last_call(fake) == ("list_entries", 20, 10, [1, 3], 2.0, 9.5)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (reid_pb2.ListGalleryRequest(limit=0), "limit must be between 1 and 1000"),
        (reid_pb2.ListGalleryRequest(limit=1001), "limit must be between 1 and 1000"),
        (reid_pb2.ListGalleryRequest(offset=2**63), "offset must be between 0"),
        (reid_pb2.ListGalleryRequest(cameras=[-1]), "cameras values must be between 0"),
        (
            reid_pb2.ListGalleryRequest(time_from=5.0, time_to=1.0),
            "time_from (5.0) is after time_to (1.0)",
        ),
    ],
    ids=["limit-0", "limit-1001", "huge-offset", "negative-camera", "time-order"],
)
@asyncio_test
async def test_bad_gallery_pages_are_invalid_argument(fake, request_, message):
    error = await rpc_error(fake.stub.ListGallery(request_))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.details()


@asyncio_test
async def test_search_by_entry_passes_k_and_filters_and_answers_the_entrys_camera(fake):
    request = reid_pb2.SearchByEntryRequest(
        id=2,
        k=1,
        filters=reid_pb2.SearchFilters(
            include_cameras=[1], time_from=1.0, min_score=0.1, exclude_same_camera=True
        ),
    )
    reply = await fake.stub.SearchByEntry(request)
    name, entry_id, options = last_call(fake)
    assert (name, entry_id, options.k, options.exclude_same_camera) == (
        "search_by_entry",
        2,
        1,
        True,
    )
    assert options.filters.include_cameras == {1} and options.filters.time_from == 1.0
    (result,) = reply.results
    assert result.query_camera == 2 and [m.id for m in result.matches] == [5]


@asyncio_test
async def test_search_by_entry_defaults_to_k_10_and_refuses_what_search_refuses(fake):
    await fake.stub.SearchByEntry(reid_pb2.SearchByEntryRequest(id=1))
    assert last_call(fake)[2].k == 10
    full = await fake.stub.SearchByEntry(reid_pb2.SearchByEntryRequest(id=1, full_ranking=True))
    assert last_call(fake)[2].k is None and len(full.results) == 1
    both = reid_pb2.SearchByEntryRequest(id=1, k=3, full_ranking=True)
    error = await rpc_error(fake.stub.SearchByEntry(both))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "either k or full_ranking" in error.details()
    window = reid_pb2.SearchFilters(time_from=5.0, time_to=1.0)
    error = await rpc_error(
        fake.stub.SearchByEntry(reid_pb2.SearchByEntryRequest(id=1, filters=window))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


@asyncio_test
async def test_search_by_an_unknown_entry_is_not_found(fake):
    for entry_id in (404, 2**64 - 1):
        error = await rpc_error(fake.stub.SearchByEntry(reid_pb2.SearchByEntryRequest(id=entry_id)))
        assert error.code() == grpc.StatusCode.NOT_FOUND, entry_id
        assert str(entry_id) in error.details()


# -- the real SearchService (colour runtime, on-disk gallery) ------------------------------------


@pytest_asyncio.fixture
async def real(tmp_path):
    settings = ServerSettings(
        api_key=WRITE_KEY, max_images=4, max_body_mb=2, max_k=50, max_pixels=2000 * 2000
    )
    gallery = Gallery.open(tmp_path / "gallery", DIM, index="flat", background_rebuild=False)
    service = SearchService(ColourRuntime(), gallery, settings)
    await service.start()
    handle, env = await serve(service, settings)
    yield env
    await env.channel.close()
    await handle.stop(None)
    await service.close()


async def populate(env: Env) -> dict[str, int]:
    request = reid_pb2.AddToGalleryRequest(
        entries=[
            entry(png(RED), camera=0, timestamp=1.0, track=7, box=(1, 2, 3, 4), source="a"),
            entry(png(GREEN), camera=1, timestamp=2.0),
            entry(png(BLUE), camera=2, timestamp=3.0),
            entry(png((240, 20, 20)), camera=1, timestamp=4.0, extra={"note": "red again"}),
        ]
    )
    reply = await env.stub.AddToGallery(request, metadata=key(WRITE_KEY))
    return dict(zip(["red0", "green1", "blue2", "red1"], reply.ids, strict=True))


async def assert_still_serving(env: Env) -> None:
    assert await health_status(env, SERVICE) == SERVING
    reply = await env.stub.Search(search_request(png(), k=1))
    assert len(reply.results) == 1


@asyncio_test
async def test_real_service_every_rpc_end_to_end(real):
    ids = await populate(real)

    reply = await real.stub.Search(search_request(png(RED), k=2))
    top, second = reply.results[0].matches
    assert [top.id, second.id] == [ids["red0"], ids["red1"]]
    assert top.score >= second.score
    assert (top.camera, top.timestamp, top.track, top.source) == (0, 1.0, 7, "a")
    assert (top.box.x, top.box.y, top.box.w, top.box.h) == (1, 2, 3, 4)
    assert top.thumbnail_url == f"/v1/gallery/{top.id}/thumbnail"
    assert json.loads(second.extra_json) == {"note": "red again"}

    embedded = await real.stub.Embed(reid_pb2.EmbedRequest(images=[png(RED)]))
    assert embedded.dim == DIM and len(embedded.embeddings[0].values) == DIM
    by_embedding = await real.stub.Search(
        reid_pb2.SearchRequest(
            embeddings=[reid_pb2.QueryEmbedding(values=embedded.embeddings[0].values)], k=1
        )
    )
    assert by_embedding.results[0].matches[0].id == ids["red0"]

    stats = await real.stub.GalleryStats(reid_pb2.GalleryStatsRequest())
    assert (stats.size, stats.dim) == (4, DIM)
    info = await real.stub.ModelInfo(reid_pb2.ModelInfoRequest())
    assert (info.name, info.dim) == ("colour-fake", DIM)

    deleted = await real.stub.DeleteFromGallery(
        reid_pb2.DeleteFromGalleryRequest(ids=[ids["red0"]]), metadata=key(WRITE_KEY)
    )
    assert list(deleted.deleted) == [ids["red0"]]
    reply = await real.stub.Search(search_request(png(RED), k=1))
    assert reply.results[0].matches[0].id == ids["red1"]


@asyncio_test
async def test_real_service_filters(real):
    ids = await populate(real)

    async def top_ids(**fields) -> list[int]:
        request = search_request(png(RED), full_ranking=True, **fields)
        return [m.id for m in (await real.stub.Search(request)).results[0].matches]

    def filters(**kw):
        return reid_pb2.SearchFilters(**kw)

    assert ids["red0"] not in await top_ids(filters=filters(exclude_cameras=[0]))
    assert set(await top_ids(filters=filters(include_cameras=[1]))) == {ids["green1"], ids["red1"]}
    window = filters(time_from=2.0, time_to=3.0)
    assert set(await top_ids(filters=window)) == {ids["green1"], ids["blue2"]}
    ranking = (await real.stub.Search(search_request(png(RED), full_ranking=True))).results[0]
    scores = [m.score for m in ranking.matches]
    assert len(scores) == 4 and scores == sorted(scores, reverse=True)
    threshold = (scores[1] + scores[2]) / 2  # keeps the two red entries only
    assert await top_ids(filters=filters(min_score=threshold)) == [ids["red0"], ids["red1"]]

    same_camera = search_request(png(RED), k=1, filters=filters(exclude_same_camera=True))
    same_camera.queries[0].camera = 0
    reply = await real.stub.Search(same_camera)
    assert reply.results[0].matches[0].id == ids["red1"]


def search_images(*images: bytes):
    return lambda stub: stub.Search(search_request(*images))


BAD_INPUTS = {
    "non-image bytes": (
        search_images(b"this is not an image"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "image 0: data is not a decodable image",
    ),
    "truncated jpeg": (
        search_images(truncated_jpeg()),
        grpc.StatusCode.INVALID_ARGUMENT,
        "image 0: data is not a decodable image",
    ),
    "zero-byte file": (
        lambda stub: stub.Embed(reid_pb2.EmbedRequest(images=[png(), b""])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "image 1: empty file (0 bytes)",
    ),
    "20000x20000 png": (
        search_images(huge_png()),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "image 0: image has too many pixels",
    ),
    "k = 0": (
        lambda stub: stub.Search(search_request(png(), k=0)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "k must be between 1 and 50 (got 0)",
    ),
    "huge k": (
        lambda stub: stub.Search(search_request(png(), k=2_000_000_000)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "k must be between 1 and 50 (got 2000000000)",
    ),
    "too many images": (
        search_images(*[png()] * 5),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "5 images in one request; the limit is 4",
    ),
    "no images": (
        lambda stub: stub.Embed(reid_pb2.EmbedRequest()),
        grpc.StatusCode.INVALID_ARGUMENT,
        "no images in the request",
    ),
    "wrong embedding dim": (
        lambda stub: stub.Search(
            reid_pb2.SearchRequest(embeddings=[reid_pb2.QueryEmbedding(values=[1.0, 2.0])])
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"embeddings must be float32[Q, {DIM}], got [1, 2]",
    ),
    "exclude_same_camera without cameras": (
        lambda stub: stub.Search(
            search_request(png(), filters=reid_pb2.SearchFilters(exclude_same_camera=True))
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "exclude_same_camera needs query_cameras",
    ),
    "unknown id on delete": (
        lambda stub: stub.DeleteFromGallery(
            reid_pb2.DeleteFromGalleryRequest(ids=[999_999]), metadata=key(WRITE_KEY)
        ),
        grpc.StatusCode.NOT_FOUND,
        "no gallery entry with id 999999",
    ),
    "bad image on add": (
        lambda stub: stub.AddToGallery(
            reid_pb2.AddToGalleryRequest(entries=[entry(png()), entry(b"GIF89a...")]),
            metadata=key(WRITE_KEY),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "image 1: data is not a decodable image",
    ),
    "missing api key": (
        lambda stub: stub.AddToGallery(reid_pb2.AddToGalleryRequest(entries=[entry(png())])),
        grpc.StatusCode.UNAUTHENTICATED,
        "an API key is required for writing to the gallery",
    ),
    "wrong api key": (
        lambda stub: stub.DeleteFromGallery(
            reid_pb2.DeleteFromGalleryRequest(ids=[1]), metadata=key("nope")
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "the API key is not valid for writing to the gallery",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
@asyncio_test
async def test_real_service_bad_input_gets_a_clear_status_and_the_server_keeps_serving(real, case):
    await populate(real)
    call, code, message = BAD_INPUTS[case]

    error = await rpc_error(call(real.stub))

    assert error.code() == code, error.details()
    assert message in error.details()
    await assert_still_serving(real)
    assert (await real.stub.GalleryStats(reid_pb2.GalleryStatsRequest())).size == 4


def http_client(env: Env) -> httpx.AsyncClient:
    """The HTTP front end over the same service, in this event loop."""
    app = create_app(env.service.settings, env.service, own_service=False)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


# One check per refusal: the HTTP form and the gRPC request go through the same models.
SAME_REFUSALS = {
    "negative camera": ({"cameras": "-1"}, {"include_cameras": [-1]}),
    "time order": ({"time_from": "5", "time_to": "1"}, {"time_from": 5.0, "time_to": 1.0}),
    "non-finite score": ({"min_score": "inf"}, {"min_score": float("inf")}),
    "same camera without one": ({"exclude_same_camera": "true"}, {"exclude_same_camera": True}),
}


@pytest.mark.parametrize("case", list(SAME_REFUSALS))
@asyncio_test
async def test_a_bad_search_value_is_the_same_refusal_over_http_and_grpc(real, case):
    form, filters = SAME_REFUSALS[case]
    files = [("images", ("q.png", png(), "image/png"))]
    async with http_client(real) as web:
        r = await web.post("/v1/search", files=files, data=form)
    error = await rpc_error(
        real.stub.Search(search_request(png(), filters=reid_pb2.SearchFilters(**filters)))
    )

    assert (r.status_code, error.code()) == (400, grpc.StatusCode.INVALID_ARGUMENT)
    body = {k: v for k, v in r.json()["error"].items() if k != "request_id"}
    assert body == {"type": "BadInputError", "message": error.details()}


@asyncio_test
async def test_real_service_model_info_and_stats_are_the_typed_models_http_reports(real):
    await populate(real)
    async with http_client(real) as web:
        http_info = ModelInfo.model_validate((await web.get("/v1/model")).json())
        http_stats = GalleryStats.model_validate((await web.get("/v1/gallery/stats")).json())

    info = await real.stub.ModelInfo(reid_pb2.ModelInfoRequest())
    stats = await real.stub.GalleryStats(reid_pb2.GalleryStatsRequest())

    assert ModelInfo.model_validate_json(info.info_json) == http_info
    assert (info.name, info.dim) == (http_info.model.name, http_info.model.embedding_dim)
    assert GalleryStats.model_validate_json(stats.stats_json) == http_stats
    assert http_stats.size == stats.size == 4 and http_stats.cameras == {0: 1, 1: 2, 2: 1}


@asyncio_test
async def test_real_service_search_of_an_empty_gallery_is_ok_and_empty(real):
    reply = await real.stub.Search(search_request(png(), png(GREEN), k=5))
    assert [list(r.matches) for r in reply.results] == [[], []]


@asyncio_test
async def test_real_service_reads_need_a_key_only_when_a_read_key_is_set(tmp_path):
    settings = ServerSettings(api_key=WRITE_KEY, read_key=READ_KEY)
    gallery = Gallery.open(tmp_path / "g", DIM, index="flat", background_rebuild=False)
    service = SearchService(ColourRuntime(), gallery, settings)
    await service.start()
    handle, env = await serve(service, settings)
    try:
        stats = reid_pb2.GalleryStatsRequest()
        assert (await rpc_error(env.stub.GalleryStats(stats))).code() == (
            grpc.StatusCode.UNAUTHENTICATED
        )
        assert (await rpc_error(env.stub.GalleryStats(stats, metadata=key("x")))).code() == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        for accepted in (READ_KEY, WRITE_KEY):
            assert (await env.stub.GalleryStats(stats, metadata=key(accepted))).size == 0
        # The health service stays open.
        assert await health_status(env) == SERVING
    finally:
        await env.channel.close()
        await handle.stop(None)
        await service.close()


@asyncio_test
async def test_real_service_stopping_turns_health_not_serving_and_calls_unavailable(real):
    await real.service.stop()
    await wait_for_health(real, NOT_SERVING)
    error = await rpc_error(real.stub.Search(search_request(png())))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "not ready" in error.details()


# -- generated code ------------------------------------------------------------------------------


@asyncio_test
async def test_real_service_lists_the_gallery_page_by_page_like_http(real):
    ids = await populate(real)
    first = await real.stub.ListGallery(reid_pb2.ListGalleryRequest(limit=3))
    second = await real.stub.ListGallery(reid_pb2.ListGalleryRequest(offset=3, limit=3))
    assert [e.id for e in first.entries] + [e.id for e in second.entries] == sorted(ids.values())
    assert first.total == second.total == 4
    past = await real.stub.ListGallery(reid_pb2.ListGalleryRequest(offset=9))
    assert list(past.entries) == [] and past.total == 4 and past.limit == 50
    filtered = await real.stub.ListGallery(reid_pb2.ListGalleryRequest(cameras=[1, 2], time_to=3.0))
    assert [e.id for e in filtered.entries] == [ids["green1"], ids["blue2"]]
    assert filtered.total == 2

    async with http_client(real) as web:
        page = (await web.get("/v1/gallery", params={"limit": 3})).json()
    for over_http, over_grpc in zip(page["entries"], first.entries, strict=True):
        meta = over_grpc.metadata
        assert over_http["id"] == over_grpc.id and over_http["camera"] == meta.camera
        assert over_http["created"] == pytest.approx(over_grpc.created)
        assert over_http["thumbnail_url"] == over_grpc.thumbnail_url


@asyncio_test
async def test_real_service_search_by_entry_leaves_the_entry_out_and_uses_its_camera(real):
    ids = await populate(real)
    reply = await real.stub.SearchByEntry(reid_pb2.SearchByEntryRequest(id=ids["red0"], k=2))
    (result,) = reply.results
    assert result.query_camera == 0
    assert result.matches[0].id == ids["red1"] and len(result.matches) == 2
    assert ids["red0"] not in [m.id for m in result.matches]

    same_camera = reid_pb2.SearchByEntryRequest(
        id=ids["red1"], full_ranking=True, filters=reid_pb2.SearchFilters(exclude_same_camera=True)
    )
    reply = await real.stub.SearchByEntry(same_camera)  # red1 and green1 are on camera 1
    assert {m.id for m in reply.results[0].matches} == {ids["red0"], ids["blue2"]}

    error = await rpc_error(real.stub.SearchByEntry(reid_pb2.SearchByEntryRequest(id=999)))
    assert error.code() == grpc.StatusCode.NOT_FOUND and "999" in error.details()
    await assert_still_serving(real)


@asyncio_test
async def test_real_service_search_by_entry_answers_what_http_answers(real):
    ids = await populate(real)
    filters = reid_pb2.SearchFilters(exclude_cameras=[2], exclude_same_camera=True)
    reply = await real.stub.SearchByEntry(
        reid_pb2.SearchByEntryRequest(id=ids["green1"], full_ranking=True, filters=filters)
    )
    form = {"full_ranking": "true", "exclude_cameras": "2", "exclude_same_camera": "true"}
    async with http_client(real) as web:
        r = await web.post(f"/v1/search/by-entry/{ids['green1']}", data=form)
        missing = await web.post("/v1/search/by-entry/999")
    (over_http,) = r.json()["results"]
    (over_grpc,) = reply.results
    assert over_http["query_camera"] == over_grpc.query_camera == 1
    assert [m["id"] for m in over_http["matches"]] == [m.id for m in over_grpc.matches]
    assert [m.id for m in over_grpc.matches] == [ids["red0"]]
    assert [m["score"] for m in over_http["matches"]] == pytest.approx(
        [m.score for m in over_grpc.matches], abs=1e-6
    )
    assert missing.status_code == 404


VERSION_STAMPS = re.compile(
    r"^(# Protobuf Python Version:.*|GRPC_GENERATED_VERSION = .*|\s+\d+,\s*$)", re.M
)


def test_generated_code_is_up_to_date_with_the_proto(tmp_path):
    pytest.importorskip("grpc_tools")
    subprocess.run(
        ["bash", str(REPO / "scripts" / "gen_proto.sh"), str(tmp_path)],
        check=True,
        capture_output=True,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
    )
    for name in ("reid_pb2.py", "reid_pb2.pyi", "reid_pb2_grpc.py"):
        fresh = (tmp_path / name).read_text()
        committed = (REPO / "client" / "reid_client" / "proto" / name).read_text()
        # Tool versions may differ between machines; the generated content may not.
        assert VERSION_STAMPS.sub("", committed) == VERSION_STAMPS.sub("", fresh), (
            f"client/reid_client/proto/{name} is stale: run scripts/gen_proto.sh"
        )


@asyncio_test
async def test_real_service_counts_grpc_calls_in_the_prometheus_metrics(real):
    await real.stub.Search(search_request(png(RED), k=1))
    with pytest.raises(grpc.aio.AioRpcError):
        await real.stub.AddToGallery(reid_pb2.AddToGalleryRequest(entries=[entry(png(RED))]))
    text = real.service.metrics.render().decode()
    assert 'protocol="grpc",route="Search",status="OK"' in text
    assert 'protocol="grpc",route="AddToGallery",status="UNAUTHENTICATED"' in text


@asyncio_test
async def test_a_call_carries_the_callers_request_id_back_in_trailing_metadata(real):
    call = real.stub.GalleryStats(
        reid_pb2.GalleryStatsRequest(), metadata=(("x-request-id", "trace-42"),)
    )
    await call
    assert ("x-request-id", "trace-42") in list(await call.trailing_metadata())
    refused = real.stub.AddToGallery(reid_pb2.AddToGalleryRequest(entries=[entry(png(RED))]))
    with pytest.raises(grpc.aio.AioRpcError):
        await refused
    ids = [value for key, value in await refused.trailing_metadata() if key == "x-request-id"]
    assert len(ids) == 1 and ids[0]  # a new id when the caller sent none
