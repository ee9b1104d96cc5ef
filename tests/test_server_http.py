"""HTTP API through FastAPI's TestClient, with a colour-mean runtime and an in-memory gallery."""

from __future__ import annotations

import asyncio
import io
import json
import re
import struct
import zlib
from typing import Annotated

import numpy as np
import pytest
from fastapi import FastAPI, Query, Security
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.testclient import TestClient
from PIL import Image
from pydantic import ValidationError
from server_fakes import DIM, ColourRuntime, MemoryGallery, image_bytes
from starlette.datastructures import Headers, QueryParams

from reid.gallery import EntryMetadata, Gallery
from reid_client.schemas import GalleryPage, GalleryStats, ModelInfo
from server.errors import ServiceError
from server.http import create_app
from server.routes import deps
from server.routes.fastpath import QueryModel, request_key
from server.service import SearchOptions, SearchService
from server.settings import ServerSettings
from server.wire import RawSearchQuery

RED, GREEN, BLUE = (250, 10, 10), (10, 250, 10), (10, 10, 250)
KEY = "s3cret-write"
READ_KEY = "s3cret-read"


def make_client(tmp_path, **overrides) -> TestClient:
    settings = ServerSettings(
        max_images=4, max_body_mb=1, max_k=50, max_pixels=2000 * 2000, **overrides
    )
    gallery = Gallery.open(tmp_path / "gallery", DIM, index="flat")
    service = SearchService(ColourRuntime(), gallery, settings)
    return TestClient(create_app(settings, service))


@pytest.fixture
def client(tmp_path):
    with make_client(tmp_path) as c:
        yield c


def files(*images: bytes, name: str = "images") -> list:
    return [(name, (f"im{i}.png", data, "image/png")) for i, data in enumerate(images)]


def add(client, colours_meta, headers=None):
    images = [image_bytes(colour) for colour, _ in colours_meta]
    meta = [m for _, m in colours_meta]
    r = client.post(
        "/v1/gallery", files=files(*images), data={"metadata": json.dumps(meta)}, headers=headers
    )
    assert r.status_code == 201, r.text
    return r.json()["ids"]


def populate(client) -> dict[str, int]:
    ids = add(
        client,
        [
            (RED, {"camera": 0, "timestamp": 1.0, "track": 7, "box": [1, 2, 3, 4], "source": "a"}),
            (GREEN, {"camera": 1, "timestamp": 2.0}),
            (BLUE, {"camera": 2, "timestamp": 3.0}),
            ((240, 20, 20), {"camera": 1, "timestamp": 4.0}),
        ],
    )
    return dict(zip(["red0", "green1", "blue2", "red1"], ids, strict=True))


def search(client, *images, **form):
    data = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in form.items()}
    return client.post("/v1/search", files=files(*images), data=data)


def error_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error"}, body
    assert body["error"]["message"], body
    return body["error"]


def assert_still_serving(client) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    r = client.post("/v1/embed", files=files(image_bytes(RED)))
    assert r.status_code == 200, r.text


# -- operations -------------------------------------------------------------------------


def test_add_then_search_returns_the_closest_entries_with_their_metadata(client):
    ids = populate(client)
    r = search(client, image_bytes(RED), k=2)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["gallery_size"] == 4 and body["took_ms"] >= 0
    (result,) = body["results"]
    assert result["query_index"] == 0 and result["query_camera"] is None
    top = result["matches"]
    assert [m["id"] for m in top] == [ids["red0"], ids["red1"]] or [m["id"] for m in top] == [
        ids["red1"],
        ids["red0"],
    ]
    assert top[0]["score"] >= top[1]["score"] > 0.9
    red0 = next(m for m in top if m["id"] == ids["red0"])
    assert red0 == {
        "id": ids["red0"],
        "score": red0["score"],
        "camera": 0,
        "timestamp": 1.0,
        "track": 7,
        "box": [1.0, 2.0, 3.0, 4.0],
        "source": "a",
        "thumbnail_url": f"/v1/gallery/{ids['red0']}/thumbnail",
    }


def test_several_query_images_get_one_result_each_in_order(client):
    ids = populate(client)
    r = search(client, image_bytes(GREEN), image_bytes(BLUE), k=1)
    results = r.json()["results"]
    assert [res["query_index"] for res in results] == [0, 1]
    assert results[0]["matches"][0]["id"] == ids["green1"]
    assert results[1]["matches"][0]["id"] == ids["blue2"]


def test_full_ranking_returns_every_entry_and_ignores_k(client):
    populate(client)
    r = search(client, image_bytes(RED), k=1, full_ranking=True)
    matches = r.json()["results"][0]["matches"]
    assert len(matches) == 4
    scores = [m["score"] for m in matches]
    assert scores == sorted(scores, reverse=True)


def test_filters_cameras_time_window_and_min_score(client):
    ids = populate(client)
    q = image_bytes(RED)

    def found(**form):
        r = search(client, q, full_ranking=True, **form)
        assert r.status_code == 200, r.text
        return {m["id"] for m in r.json()["results"][0]["matches"]}

    assert found(cameras="1,2") == {ids["green1"], ids["blue2"], ids["red1"]}
    assert found(exclude_cameras="1") == {ids["red0"], ids["blue2"]}
    assert found(time_from=2.0, time_to=3.0) == {ids["green1"], ids["blue2"]}
    assert found(min_score=0.9) == {ids["red0"], ids["red1"]}
    assert found(query_cameras="0", exclude_same_camera=True) == {
        ids["green1"],
        ids["blue2"],
        ids["red1"],
    }


def test_exclude_same_camera_applies_each_querys_own_camera(client):
    ids = populate(client)
    r = search(
        client,
        image_bytes(RED),
        image_bytes(RED),
        k=1,
        query_cameras="0,1",
        exclude_same_camera=True,
    )
    first, second = r.json()["results"]
    assert (first["query_camera"], second["query_camera"]) == (0, 1)
    assert first["matches"][0]["id"] == ids["red1"]  # camera 0 excluded
    assert second["matches"][0]["id"] == ids["red0"]  # camera 1 excluded


def test_raw_body_search(client):
    ids = populate(client)
    r = client.post(
        "/v1/search/raw?k=1&query_camera=0&exclude_same_camera=true",
        content=image_bytes(RED),
        headers={"Content-Type": "image/png"},
    )
    assert r.status_code == 200, r.text
    (result,) = r.json()["results"]
    assert result["query_camera"] == 0
    assert [m["id"] for m in result["matches"]] == [ids["red1"]]


def test_embed_returns_one_normalised_vector_per_image(client):
    r = client.post("/v1/embed", files=files(image_bytes(RED), image_bytes(BLUE)))
    body = r.json()
    assert body["dim"] == DIM and body["model"] == "colour-fake"
    assert len(body["embeddings"]) == 2 and all(len(v) == DIM for v in body["embeddings"])
    assert body["embeddings"][0] != body["embeddings"][1]


def test_entry_metadata_thumbnail_and_stats(client):
    ids = populate(client)
    r = client.get(f"/v1/gallery/{ids['red0']}")
    assert r.status_code == 200
    entry = r.json()
    assert entry["id"] == ids["red0"] and entry["camera"] == 0 and entry["source"] == "a"
    assert entry["thumbnail_url"] == f"/v1/gallery/{ids['red0']}/thumbnail"

    thumb = client.get(entry["thumbnail_url"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(thumb.content)).format == "JPEG"

    stats = client.get("/v1/gallery/stats").json()
    assert stats["size"] == 4 and stats["dim"] == DIM


def test_thumbnails_are_small_jpegs_of_the_crop(client):
    big = image_bytes(RED, size=(200, 400))
    r = client.post("/v1/gallery", files=files(big))
    (entry_id,) = r.json()["ids"]
    thumb = Image.open(io.BytesIO(client.get(f"/v1/gallery/{entry_id}/thumbnail").content))
    assert thumb.size == (64, 128)


def test_delete_one_and_many(client):
    ids = populate(client)
    r = client.delete(f"/v1/gallery/{ids['red0']}")
    assert r.status_code == 200 and r.json() == {"deleted": [ids["red0"]]}
    assert client.get(f"/v1/gallery/{ids['red0']}").status_code == 404

    r = client.post("/v1/gallery/delete", json={"ids": [ids["green1"], 999]})
    assert r.json() == {"deleted": [ids["green1"]], "missing": [999]}
    assert client.get("/v1/gallery/stats").json()["size"] == 2


def test_model_health_ready(client):
    info = client.get("/v1/model").json()
    assert info["model"]["name"] == "colour-fake" and info["model"]["embedding_dim"] == DIM
    assert info["runtime"]["runtime"] == "fake"
    assert info["batching"]["enabled"] is True and info["limits"]["max_images"] == 4
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}


def test_model_info_and_stats_validate_as_the_typed_schemas(client):
    populate(client)
    info = ModelInfo.model_validate(client.get("/v1/model").json())
    assert (info.model.name, info.model.embedding_dim) == ("colour-fake", DIM)
    assert info.model.input_size == [32, 16] and info.runtime.runtime == "fake"
    assert info.limits.max_k == 50 and info.limits.max_full_ranking is None
    assert info.auth.writes_need_key is False

    stats = GalleryStats.model_validate(client.get("/v1/gallery/stats").json())
    assert (stats.size, stats.dim, stats.index) == (4, DIM, "flat")
    assert stats.cameras == {0: 1, 1: 2, 2: 1} and stats.time_range == [1.0, 4.0]
    assert stats.with_thumbnails == 4


@pytest.mark.parametrize("expose", [False, True])
def test_model_info_reports_the_export_dir_only_when_the_operator_allows_it(tmp_path, expose):
    settings = ServerSettings(expose_export_dir=expose)
    runtime = ColourRuntime()
    export = tmp_path / "exports" / ".." / "export"
    runtime.manifest.directory = export
    runtime.manifest.source = {"sha256": "ab" * 32}
    service = SearchService(runtime, MemoryGallery(), settings)
    with TestClient(create_app(settings, service)) as client:
        info = ModelInfo.model_validate(client.get("/v1/model").json())
    assert info.model.checkpoint_sha256 == "ab" * 32  # always: the evaluation checks it
    assert info.model.export_dir == (str(export.resolve()) if expose else None)


def test_readyz_is_503_before_the_service_starts_and_after_it_stops(tmp_path):
    settings = ServerSettings()
    service = SearchService(ColourRuntime(), MemoryGallery(), settings)
    app = create_app(settings, service)
    client = TestClient(app)  # no context manager: lifespan not run, service not started
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json() == {"status": "not ready"}
    assert client.get("/healthz").status_code == 200
    assert client.post("/v1/embed", files=files(image_bytes(RED))).status_code == 503


def test_metrics_count_requests_batches_and_gallery_size(client):
    populate(client)
    search(client, image_bytes(RED), k=1)
    client.get("/v1/gallery/999")
    text = client.get("/metrics").text
    assert 'reid_requests_total{protocol="http",route="/v1/search",status="200"} 1.0' in text
    assert 'route="/v1/gallery/{entry_id}",status="404"' in text
    assert "reid_request_latency_seconds_bucket" in text
    assert "reid_batch_size_images_count" in text
    assert "reid_gallery_entries 4.0" in text
    assert "reid_batch_queue_depth_images" in text


# -- the gallery a page at a time ------------------------------------------------------


def test_gallery_pages_list_entries_in_id_order_with_the_filtered_total(client):
    ids = populate(client)
    r = client.get("/v1/gallery", params={"limit": 3})
    assert r.status_code == 200, r.text
    page = GalleryPage.model_validate(r.json())
    assert (page.total, page.offset, page.limit) == (4, 0, 3)
    assert [e.id for e in page.entries] == sorted(ids.values())[:3]
    first = page.entries[0]
    assert first.model_dump() == client.get(f"/v1/gallery/{ids['red0']}").json()

    rest = client.get("/v1/gallery", params={"offset": 3, "limit": 3}).json()
    assert [e["id"] for e in rest["entries"]] == [ids["red1"]] and rest["total"] == 4
    past = client.get("/v1/gallery", params={"offset": 10}).json()
    assert past == {"entries": [], "total": 4, "offset": 10, "limit": 50}


def test_gallery_pages_filter_by_cameras_and_time_window(client):
    ids = populate(client)

    def listed(**query):
        r = client.get("/v1/gallery", params=query)
        assert r.status_code == 200, r.text
        return [e["id"] for e in r.json()["entries"]], r.json()["total"]

    assert listed(cameras="1,2") == ([ids["green1"], ids["blue2"], ids["red1"]], 3)
    assert listed(cameras="1,2", offset=1, limit=1) == ([ids["blue2"]], 3)
    assert listed(time_from=2.0, time_to=3.0) == ([ids["green1"], ids["blue2"]], 2)
    assert listed(cameras=1, time_from=3.0) == ([ids["red1"]], 1)
    r = client.get("/v1/gallery?cameras=0&cameras=2")  # repeated parameters work too
    assert [e["id"] for e in r.json()["entries"]] == [ids["red0"], ids["blue2"]]


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ({"limit": 1001}, "limit must be between 1 and 1000"),
        ({"limit": 0}, "limit must be between 1 and 1000"),
        ({"offset": -1}, "offset must be between 0"),
        ({"cameras": "a"}, "cameras must be comma-separated integers"),
        ({"time_from": 5, "time_to": 1}, "time_from (5.0) is after time_to (1.0)"),
    ],
)
def test_bad_gallery_pages_are_400(client, query, words):
    r = client.get("/v1/gallery", params=query)
    assert r.status_code == 400, r.text
    assert words in error_of(r)["message"]


def test_a_page_of_the_largest_size_is_allowed(client):
    populate(client)
    assert client.get("/v1/gallery", params={"limit": 1000}).json()["limit"] == 1000


# -- search by entry ("find this person elsewhere") -------------------------------------


def by_entry(client, entry_id, **form):
    data = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in form.items()}
    return client.post(f"/v1/search/by-entry/{entry_id}", data=data)


def test_search_by_entry_finds_the_person_elsewhere_without_the_entry_itself(client):
    ids = populate(client)
    r = by_entry(client, ids["red0"], k=2)
    assert r.status_code == 200, r.text
    (result,) = r.json()["results"]
    assert result["query_index"] == 0 and result["query_camera"] == 0  # the entry's camera
    assert result["matches"][0]["id"] == ids["red1"]
    assert ids["red0"] not in [m["id"] for m in result["matches"]]
    assert len(result["matches"]) == 2
    full = by_entry(client, ids["red0"], full_ranking=True).json()["results"][0]["matches"]
    assert sorted(m["id"] for m in full) == sorted(set(ids.values()) - {ids["red0"]})


def test_search_by_entry_is_the_search_with_its_stored_embedding(client):
    ids = populate(client)
    by_image = search(client, image_bytes(RED), full_ranking=True).json()["results"][0]
    by_id = by_entry(client, ids["red0"], full_ranking=True).json()["results"][0]
    expected = [m for m in by_image["matches"] if m["id"] != ids["red0"]]
    assert [m["id"] for m in by_id["matches"]] == [m["id"] for m in expected]
    assert [m["score"] for m in by_id["matches"]] == pytest.approx(
        [m["score"] for m in expected], abs=1e-5
    )


def test_search_by_entry_excludes_the_entrys_own_camera_and_applies_filters(client):
    ids = populate(client)

    def found(entry, **form):
        r = by_entry(client, ids[entry], full_ranking=True, **form)
        assert r.status_code == 200, r.text
        return {m["id"] for m in r.json()["results"][0]["matches"]}

    # red1 is on camera 1, as green1: both are left out.
    assert found("red1", exclude_same_camera=True) == {ids["red0"], ids["blue2"]}
    assert found("red0", cameras="1") == {ids["green1"], ids["red1"]}
    assert found("red0", exclude_cameras="1,2") == set()
    assert found("red0", time_from=2.0, time_to=3.0) == {ids["green1"], ids["blue2"]}
    assert found("red0", min_score=0.9) == {ids["red1"]}


def test_search_by_entry_of_an_entry_without_camera_excludes_no_camera(client):
    ids = populate(client)
    (bare,) = add(client, [((245, 15, 15), {})])

    def ranking(**form):
        result = by_entry(client, bare, full_ranking=True, **form).json()["results"][0]
        return result["query_camera"], [m["id"] for m in result["matches"]]

    assert ranking(exclude_same_camera=True) == ranking() == (None, ranking()[1])
    assert sorted(ranking()[1]) == sorted(ids.values())


def test_search_by_an_unknown_entry_is_404_and_bad_fields_are_400(client):
    ids = populate(client)
    r = by_entry(client, 12345)
    assert r.status_code == 404 and "12345" in error_of(r)["message"]
    assert by_entry(client, ids["red0"], k=0).status_code == 400
    assert by_entry(client, ids["red0"], k=51).status_code == 400  # max_k is 50
    assert by_entry(client, ids["red0"], k=50).status_code == 200  # the entry is dropped after
    r = by_entry(client, ids["red0"], time_from=5, time_to=1)
    assert r.status_code == 400 and "after time_to" in error_of(r)["message"]
    assert_still_serving(client)


def test_search_by_entry_needs_the_read_key_when_one_is_set(tmp_path):
    with make_client(tmp_path, api_key=KEY, read_key=READ_KEY) as client:
        (entry_id,) = add(client, [(RED, {"camera": 0})], headers={"X-API-Key": KEY})
        assert client.post(f"/v1/search/by-entry/{entry_id}").status_code == 401
        assert client.get("/v1/gallery").status_code == 401
        headers = {"X-API-Key": READ_KEY}
        assert client.post(f"/v1/search/by-entry/{entry_id}", headers=headers).status_code == 200
        assert client.get("/v1/gallery", headers=headers).json()["total"] == 1


# -- API docs that work offline ---------------------------------------------------------

LOCAL_ASSETS = {
    "/docs/assets/swagger-ui-bundle.js": "text/javascript",
    "/docs/assets/swagger-ui.css": "text/css",
    "/docs/assets/redoc.standalone.js": "text/javascript",
    "/docs/assets/favicon-32x32.png": "image/png",
}


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_load_only_files_from_this_server(client, page):
    r = client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    sources = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert sources, r.text
    for url in sources:
        assert url.startswith("/") and not url.startswith("//"), url
        assert url in LOCAL_ASSETS, url
    assert "http://" not in r.text and "https://" not in r.text
    # The browser is told so too: nothing may load from anywhere else.
    policy = r.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "img-src 'self' data: blob:" in policy
    assert "http" not in policy and "*" not in policy
    assert 'spec-url="/openapi.json"' in r.text or "url: '/openapi.json'" in r.text


@pytest.mark.parametrize(("url", "content_type"), list(LOCAL_ASSETS.items()))
def test_the_docs_assets_are_served_with_their_content_type(client, url, content_type):
    r = client.get(url)
    assert r.status_code == 200
    assert r.headers["content-type"].split(";")[0] == content_type
    assert len(r.content) > 500


def test_only_the_vendored_docs_assets_are_served(client):
    for name in ("README.md", "redoc.LICENSE", "..%2Fhttp.py", "nothing.js"):
        assert client.get(f"/docs/assets/{name}").status_code == 404


def _body_schema(spec: dict, path: str, method: str = "post") -> dict:
    content = spec["paths"][path][method]["requestBody"]["content"]
    (media,) = content.values()
    ref = media["schema"]["$ref"].rsplit("/", 1)[1]
    schema = spec["components"]["schemas"][ref]
    for part in schema.get("allOf", []):  # a form model shared with the file fields
        inner = spec["components"]["schemas"][part["$ref"].rsplit("/", 1)[1]]
        schema = {**schema, "properties": {**inner["properties"], **schema["properties"]}}
    return schema


def test_openapi_declares_uploads_as_binary_files_for_try_it_out(client):
    spec = client.get("/openapi.json").json()
    assert "contentMediaType" not in json.dumps(spec)
    for path in ("/v1/search", "/v1/embed", "/v1/gallery"):
        images = _body_schema(spec, path)["properties"]["images"]
        assert images["type"] == "array"
        assert images["items"] == {"type": "string", "format": "binary"}, path


def test_openapi_leaves_optional_inputs_without_a_value_to_fill_in(client):
    spec = client.get("/openapi.json").json()
    for path in ("/v1/search", "/v1/search/by-entry/{entry_id}"):
        fields = _body_schema(spec, path)["properties"]
        for name in ("time_from", "time_to", "min_score"):
            field = fields[name]
            assert field["type"] == "number" and "anyOf" not in field, (path, name)
            assert "default" not in field and field.get("examples") == [""], (path, name)
        for name in ("cameras", "exclude_cameras"):
            assert fields[name]["type"] == "array" and fields[name]["examples"] == [[]]
        assert fields["k"]["default"] == 10  # real defaults stay
    metadata = _body_schema(spec, "/v1/gallery")["properties"]["metadata"]
    assert metadata["type"] == "string" and "default" not in metadata
    listing = {p["name"]: p["schema"] for p in spec["paths"]["/v1/gallery"]["get"]["parameters"]}
    assert listing["time_from"] == {
        "type": "number",
        "description": "earliest timestamp",
        "title": "Time From",
    }
    assert (listing["offset"]["default"], listing["limit"]["default"]) == (0, 50)
    assert listing["limit"]["maximum"] == 1000
    # Answers keep their nulls: a match may have no camera.
    camera = spec["components"]["schemas"]["MatchOut"]["properties"]["camera"]
    assert {"type": "null"} in camera["anyOf"]


# -- bad input: a clear 4xx, and the server keeps serving -------------------------------


def truncated_jpeg() -> bytes:
    return image_bytes(RED, size=(64, 128), fmt="JPEG")[:200]


def huge_png(width: int = 20000, height: int = 20000) -> bytes:
    """A complete, valid 1-bit greyscale PNG of ``width`` x ``height`` (about 50 KB)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\0" + b"\0" * ((width + 7) // 8)  # filter byte + packed bits
    pixels = zlib.compress(row * height, 9)
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        (b"this is not an image", 400, "not a decodable image"),
        (truncated_jpeg(), 400, "truncated"),
        (b"", 400, "empty"),
        (huge_png(), 413, "pixels"),
    ],
    ids=["non-image", "truncated-jpeg", "zero-bytes", "20000x20000-png"],
)
@pytest.mark.parametrize("route", ["/v1/search", "/v1/embed", "/v1/gallery"])
def test_bad_images_get_a_clear_4xx(client, route, data, status, words):
    r = client.post(route, files=files(image_bytes(RED), data))
    assert r.status_code == status, r.text
    message = error_of(r)["message"]
    assert words in message
    if status == 400:
        assert "image 1" in message  # names the offending file
    assert_still_serving(client)


def test_bad_image_adds_nothing(client):
    client.post("/v1/gallery", files=files(image_bytes(RED), b"junk"))
    assert client.get("/v1/gallery/stats").json()["size"] == 0


def test_raw_search_with_wrong_content_type_is_415(client):
    r = client.post("/v1/search/raw", content=b"{}", headers={"Content-Type": "application/json"})
    assert r.status_code == 415
    assert "Content-Type" in error_of(r)["message"]
    assert_still_serving(client)


def test_multipart_route_with_json_body_is_415(client):
    r = client.post("/v1/search", json={"images": []})
    assert r.status_code == 415
    assert "multipart/form-data" in error_of(r)["message"]


@pytest.mark.parametrize("k", [0, -3, 51, 10**9])
def test_k_out_of_range_is_400(client, k):
    populate(client)
    r = search(client, image_bytes(RED), k=k)
    assert r.status_code == 400
    assert "k must be between 1 and 50" in error_of(r)["message"]
    assert_still_serving(client)


def test_k_larger_than_the_gallery_returns_what_there_is(client):
    populate(client)
    assert len(search(client, image_bytes(RED), k=50).json()["results"][0]["matches"]) == 4


def test_search_on_an_empty_gallery_returns_no_matches(client):
    r = search(client, image_bytes(RED), k=5)
    assert r.status_code == 200
    assert r.json()["results"] == [{"query_index": 0, "query_camera": None, "matches": []}]
    assert r.json()["gallery_size"] == 0


def test_unknown_ids_are_404(client):
    for r in (
        client.delete("/v1/gallery/12345"),
        client.get("/v1/gallery/12345"),
        client.get("/v1/gallery/12345/thumbnail"),
    ):
        assert r.status_code == 404
        assert "12345" in error_of(r)["message"]
    assert_still_serving(client)


def test_too_many_images_is_413(client):
    r = client.post("/v1/search", files=files(*[image_bytes(RED)] * 5))
    assert r.status_code == 413
    assert "limit is 4" in error_of(r)["message"]


def test_no_images_is_refused(client):
    r = client.post("/v1/search", data={"k": "3"}, files=[("other", ("x", b"x", "text/plain"))])
    assert r.status_code == 422
    assert "images" in error_of(r)["message"]


def test_body_over_the_limit_is_413_before_reading(client):
    big = b"\0" * (1024 * 1024 + 10)
    r = client.post("/v1/search", files=files(big))
    assert r.status_code == 413
    assert "larger than the limit" in error_of(r)["message"]
    r = client.post(
        "/v1/search/raw",
        content=iter([b"\0" * 600_000, b"\0" * 600_000]),  # streamed: no Content-Length
        headers={"Content-Type": "image/png"},
    )
    assert r.status_code == 413
    assert_still_serving(client)


@pytest.mark.parametrize(
    ("form", "words"),
    [
        ({"cameras": "1,x"}, "comma-separated integers"),
        ({"exclude_cameras": "-1"}, "exclude_cameras values must be between 0 and"),
        ({"query_cameras": "0,1"}, "query_cameras has 2 values for 1"),
        ({"exclude_same_camera": "true"}, "needs query_cameras"),
        ({"time_from": "5", "time_to": "1"}, "after time_to"),
        ({"min_score": "nan"}, "min_score"),
    ],
)
def test_malformed_filters_are_400(client, form, words):
    r = client.post("/v1/search", files=files(image_bytes(RED)), data=form)
    assert r.status_code == 400, r.text
    assert words in error_of(r)["message"]


@pytest.mark.parametrize(
    ("query", "status", "words"),
    [
        ("time_from=5&time_to=1", 400, "time_from (5.0) is after time_to (1.0)"),
        ("exclude_same_camera=true", 400, "needs query_cameras"),
        ("query_camera=x", 400, "comma-separated integers"),
        ("k=0", 400, "k must be between 1 and 50"),
        ("k=abc", 422, "k: Input should be a valid integer"),  # a wrong type, not a bad value
    ],
)
def test_malformed_raw_search_parameters_are_refused(client, query, status, words):
    r = client.post(
        f"/v1/search/raw?{query}", content=image_bytes(RED), headers={"Content-Type": "image/png"}
    )
    assert r.status_code == status, r.text
    assert words in error_of(r)["message"]


@pytest.mark.parametrize(
    ("metadata", "words"),
    [
        ("not json", "not valid JSON"),
        ('[{"camera": "north"}]', "camera"),
        ('[{"colour": 1}]', "unknown metadata field"),
        ("[{}, {}]", "2 metadata objects for 1 images"),
    ],
)
def test_bad_metadata_is_400(client, metadata, words):
    r = client.post("/v1/gallery", files=files(image_bytes(RED)), data={"metadata": metadata})
    assert r.status_code == 400, r.text
    assert words in error_of(r)["message"]


# -- API keys -------------------------------------------------------------------------


def test_writes_need_the_api_key_when_one_is_configured(tmp_path):
    with make_client(tmp_path, api_key=KEY) as client:
        r = client.post("/v1/gallery", files=files(image_bytes(RED)))
        assert r.status_code == 401 and "X-API-Key" in error_of(r)["message"]
        r = client.post("/v1/gallery", files=files(image_bytes(RED)), headers={"X-API-Key": "no"})
        assert r.status_code == 403 and "not valid" in error_of(r)["message"]
        assert client.delete("/v1/gallery/1").status_code == 401
        assert client.post("/v1/gallery/delete", json={"ids": [1]}).status_code == 401

        (entry_id,) = add(client, [(RED, {})], headers={"X-API-Key": KEY})
        bearer = {"Authorization": f"Bearer {KEY}"}
        assert client.delete(f"/v1/gallery/{entry_id}", headers=bearer).status_code == 200
        # Reads stay open without a read key.
        assert search(client, image_bytes(RED)).status_code == 200
        assert client.get("/v1/gallery/stats").status_code == 200


def test_reads_need_a_key_when_a_read_key_is_configured(tmp_path):
    with make_client(tmp_path, api_key=KEY, read_key=READ_KEY) as client:
        assert search(client, image_bytes(RED)).status_code == 401
        assert client.get("/v1/gallery/stats", headers={"X-API-Key": "x"}).status_code == 403
        for key in (READ_KEY, KEY):
            assert client.get("/v1/gallery/stats", headers={"X-API-Key": key}).status_code == 200
        # The read key does not allow writes.
        r = client.post(
            "/v1/gallery", files=files(image_bytes(RED)), headers={"X-API-Key": READ_KEY}
        )
        assert r.status_code == 403
        # Liveness, readiness and metrics stay open.
        for path in ("/healthz", "/readyz", "/metrics"):
            assert client.get(path).status_code == 200


def test_openapi_documents_every_operation_with_errors(client):
    spec = client.get("/openapi.json").json()
    operations = [(p, m, op) for p, ops in spec["paths"].items() for m, op in ops.items()]
    assert {p for p, _, _ in operations} >= {
        "/v1/search",
        "/v1/search/raw",
        "/v1/search/by-entry/{entry_id}",
        "/v1/embed",
        "/v1/gallery",
        "/v1/gallery/delete",
        "/v1/gallery/stats",
        "/v1/gallery/{entry_id}",
        "/v1/gallery/{entry_id}/thumbnail",
        "/v1/model",
        "/healthz",
        "/readyz",
        "/metrics",
    }
    for path, method, op in operations:
        assert op.get("summary"), (path, method)
        if path.startswith("/v1/"):
            assert "400" in op["responses"] or "404" in op["responses"], (path, method)


# -- settings ---------------------------------------------------------------------------


def test_cli_flags_override_environment_settings(monkeypatch):
    from server.cli import settings_from_args

    monkeypatch.setenv("REID_API_KEY", "from-env")
    monkeypatch.setenv("REID_MAX_BATCH", "8")
    monkeypatch.setenv("REID_HTTP_PORT", "9000")
    settings = settings_from_args(["--model", "m", "--gallery", "g", "--max-batch", "64"])
    assert settings.max_batch == 64  # flag wins
    assert settings.http_port == 9000  # env kept where no flag
    assert settings.api_key.get_secret_value() == "from-env"
    assert settings.batching and settings.grpc
    off = settings_from_args(["--no-batching", "--no-grpc", "--api-key", ""])
    assert not off.batching and not off.grpc and off.api_key is None  # empty key = no key


# -- the service contract used by gRPC too ---------------------------------------------


@pytest.mark.parametrize(
    ("embeddings", "words"),
    [
        (np.zeros((1, DIM + 1), np.float32), f"float32[Q, {DIM}]"),
        (np.zeros((0, DIM), np.float32), f"float32[Q, {DIM}]"),
        (np.full((1, DIM), np.nan, np.float32), "NaN"),
        (np.zeros((5, DIM), np.float32) + 1, "limit is 4"),
    ],
    ids=["wrong-dim", "no-queries", "nan", "too-many"],
)
def test_search_embeddings_refuses_bad_vectors(embeddings, words):
    async def go():
        settings = ServerSettings(max_images=4)
        service = SearchService(ColourRuntime(), MemoryGallery(), settings)
        await service.start()
        try:
            with pytest.raises(ServiceError, match=re.escape(words)) as info:
                await service.search_embeddings(embeddings, SearchOptions())
            return info.value
        finally:
            await service.close()

    error = asyncio.run(go())
    assert 400 <= error.http_status < 500


def test_search_embeddings_with_k_none_is_a_full_ranking():
    async def go():
        service = SearchService(ColourRuntime(), MemoryGallery(), ServerSettings())
        await service.start()
        vectors = np.eye(DIM, dtype=np.float32)[:5]
        await asyncio.to_thread(service.gallery.add, vectors, [EntryMetadata()] * 5)
        (matches,) = await service.search_embeddings(vectors[:1], SearchOptions(k=None))
        await service.close()
        return matches

    matches = asyncio.run(go())
    assert len(matches) == 5 and matches[0].score == pytest.approx(1.0)


def test_with_only_a_read_key_writes_need_it_too(tmp_path):
    """Writes are never less protected than reads (``python -m server`` refuses to start
    this way without --allow-anonymous-writes; an app built in-process stays safe)."""
    with make_client(tmp_path, read_key=READ_KEY) as client:
        assert client.post("/v1/gallery", files=files(image_bytes(RED))).status_code == 401
        r = client.post(
            "/v1/gallery", files=files(image_bytes(RED)), headers={"X-API-Key": READ_KEY}
        )
        assert r.status_code == 201
        auth = client.get("/v1/model", headers={"X-API-Key": READ_KEY}).json()["auth"]
        assert auth == {"writes_need_key": True, "reads_need_key": True}
    with make_client(tmp_path / "anon", read_key=READ_KEY, allow_anonymous_writes=True) as client:
        assert client.post("/v1/gallery", files=files(image_bytes(RED))).status_code == 201


# -- the raw search's fast path and its JSON answer (issue 19) -----------------------------


def test_search_answers_are_the_json_of_the_typed_schema(client):
    from reid_client.schemas import SearchResponse

    populate(client)
    for r in (
        client.post("/v1/search/raw?k=4", content=image_bytes(RED), headers=RAW),
        search(client, image_bytes(RED), image_bytes(BLUE), k=3, query_cameras="0,2"),
    ):
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        body = r.json()
        assert SearchResponse.model_validate(body).model_dump(mode="json") == body
        assert json.loads(r.content) == body  # plain JSON


RAW = {"Content-Type": "image/jpeg"}


_query_app = FastAPI()


@_query_app.get("/q")
async def _read_query(params: Annotated[RawSearchQuery, Query()]) -> dict:
    return params.model_dump()


_key_app = FastAPI()


@_key_app.get("/k")
async def _read_key(
    api_key: Annotated[str | None, Security(deps._api_key_header)] = None,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(deps._bearer)] = None,
) -> dict:
    return {"key": deps._key(api_key, bearer)}


def _fastapi_query_values(query: str):
    """What FastAPI's own Query() model gives for a query string (or its status code)."""
    r = TestClient(_query_app).get(f"/q?{query}")
    return r.json() if r.status_code == 200 else r.status_code


@pytest.mark.parametrize(
    "query",
    [
        "",
        "k=10",
        "k=3&k=7",
        "k=5&full_ranking=true&min_score=0.25",
        "cameras=1,2&cameras=3&exclude_cameras=4",
        "query_camera=2&exclude_same_camera=true",
        "query_cameras=2&exclude_same_camera=true",
        "time_from=1.5&time_to=2.5&unknown=1",
        "cameras=&k=2",
        "k=abc",
        "k=0",
        "time_from=3&time_to=1",
        "min_score=nan",
        "exclude_same_camera=true",
        "cameras=99999999999",
    ],
)
def test_the_fast_path_reads_query_parameters_as_fastapi_does(query):
    expected = _fastapi_query_values(query)
    try:
        got = QueryModel(RawSearchQuery).parse(QueryParams(query)).model_dump()
    except ValidationError:
        assert isinstance(expected, int) and expected >= 400, expected
    else:
        assert got == expected


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-API-Key": "k1"},
        {"X-API-Key": ""},
        {"Authorization": "Bearer k2"},
        {"Authorization": "bearer   k2 "},
        {"Authorization": "Basic k2"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer "},
        {"X-API-Key": "k1", "Authorization": "Bearer k2"},
        {"X-API-Key": "", "Authorization": "Bearer k2"},
    ],
)
def test_the_fast_path_reads_the_api_key_as_fastapi_security_does(headers):
    expected = TestClient(_key_app).get("/k", headers=headers).json()["key"]
    assert request_key(Headers(headers=headers)) == expected


def test_ordinary_raw_searches_skip_fastapis_dependency_solving(tmp_path, solved):
    with make_client(tmp_path, read_key=READ_KEY, api_key=KEY) as c:
        add(c, [(RED, {"camera": 0})], headers={"X-API-Key": KEY})
        solved.clear()
        for headers in ({"X-API-Key": READ_KEY}, {"Authorization": f"Bearer {KEY}"}):
            r = c.post(
                "/v1/search/raw?k=1&cameras=0", content=image_bytes(RED), headers=RAW | headers
            )
            assert r.status_code == 200, r.text
        assert solved == []
        # Anything else is FastAPI's, with its answers: no key, a wrong key, a bad k.
        for headers, query, status in (
            ({}, "k=1", 401),
            ({"X-API-Key": "wrong"}, "k=1", 403),
            ({"X-API-Key": READ_KEY}, "k=abc", 422),
            ({"X-API-Key": READ_KEY}, "time_from=2&time_to=1", 400),
        ):
            r = c.post(f"/v1/search/raw?{query}", content=image_bytes(RED), headers=RAW | headers)
            assert r.status_code == status, r.text
            assert error_of(r)["request_id"] == r.headers["x-request-id"]
        assert len(solved) == 4
