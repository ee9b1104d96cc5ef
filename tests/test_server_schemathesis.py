"""Schemathesis against the HTTP API's own OpenAPI document: no input may cause a 5xx.

The app runs in-process (ASGI) on fakes: a colour-mean runtime and an in-memory
gallery holding a few entries. Batching is off so each request runs in whatever
event loop the ASGI transport uses. Bounded: 30 examples per operation.
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance
from server_fakes import DIM, ColourRuntime, MemoryGallery, image_bytes

from reid.gallery import EntryMetadata
from server.http import create_app
from server.service import SearchService
from server.settings import ServerSettings


def _app():
    config = ServerSettings(batching=False, max_images=4, max_body_mb=2, max_k=100)
    gallery = MemoryGallery(DIM)
    crops = (
        np.zeros((3, 3, 32, 16), np.float32) + np.arange(3, dtype=np.float32)[:, None, None, None]
    )
    metadata = [EntryMetadata(camera=i, timestamp=float(i)) for i in range(3)]
    gallery.add(ColourRuntime().embed(crops), metadata)
    service = SearchService(ColourRuntime(), gallery, config)
    asyncio.run(service.start())  # batching off: no loop-bound worker to keep alive
    # Each ASGI call runs the lifespan; the service must outlive it.
    return create_app(config, service, own_service=False)


APP = _app()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_input_causes_a_server_error(case):
    case.call_and_validate(checks=[not_a_server_error, response_schema_conformance])


def test_a_valid_image_search_succeeds_through_the_same_app():
    """Sanity check of the fixture: the fuzzed app really serves searches."""
    from fastapi.testclient import TestClient

    client = TestClient(_app())  # a fresh one: the fuzzing above edits the gallery
    files = [("images", ("a.png", image_bytes((10, 200, 30)), "image/png"))]
    r = client.post("/v1/search", files=files, data={"k": "2"})
    assert r.status_code == 200, r.text
    assert len(r.json()["results"][0]["matches"]) == 2
    assert json.loads(client.get("/v1/gallery/stats").text)["size"] == 3
