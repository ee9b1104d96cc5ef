"""Server logs: request ids in error bodies and log lines, the access log, JSON lines."""

from __future__ import annotations

import io
import json
import logging

import pytest
from fastapi.testclient import TestClient
from server_fakes import DIM, ColourRuntime, image_bytes

from reid.gallery import Gallery
from reid_client.schemas import ErrorResponse
from server import logs
from server.http import create_app
from server.service import SearchService
from server.settings import ServerSettings


def make_client(tmp_path, **overrides) -> TestClient:
    settings = ServerSettings(max_images=2, max_body_mb=1, **overrides)
    gallery = Gallery.open(tmp_path / "gallery", DIM, index="flat")
    return TestClient(create_app(settings, SearchService(ColourRuntime(), gallery, settings)))


@pytest.fixture
def client(tmp_path):
    with make_client(tmp_path) as c:
        yield c


@pytest.fixture
def captured():
    """Every log line, formatted as ``python -m server`` formats them (text)."""
    stream = io.StringIO()
    handler = logs.make_handler("text", stream)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)


def bad_search(client, headers=None):
    return client.post("/v1/search", files=[("images", ("a.png", b"no png", "image/png"))],
                       headers=headers)  # fmt: skip


def test_an_error_body_names_the_clients_request_id_and_the_response_echoes_it(client):
    r = bad_search(client, headers={"X-Request-ID": "case-42"})
    assert r.status_code == 400
    assert r.json()["error"]["request_id"] == "case-42"
    assert r.headers["X-Request-ID"] == "case-42"
    assert ErrorResponse.model_validate(r.json()).error.request_id == "case-42"


@pytest.mark.parametrize("header", [None, "", "x" * 129, "bad id with spaces", "ünï"])
def test_without_a_usable_header_an_id_is_generated(client, header):
    headers = {} if header is None else {"X-Request-ID": header.encode()}
    r = bad_search(client, headers=headers)
    rid = r.json()["error"]["request_id"]
    assert len(rid) == 32 and int(rid, 16) >= 0 and rid == r.headers["X-Request-ID"]
    assert bad_search(client).json()["error"]["request_id"] != rid  # one per request


def test_every_kind_of_error_body_has_the_request_id(client):
    cases = [
        client.get("/no/such/route"),  # 404 from routing
        client.post("/v1/search", json={"k": 1}),  # 415 from validation
        client.post("/v1/search", content=b"x" * (2 << 20), headers={"content-type": "a/b"}),
        bad_search(client),  # 400 from the service
    ]
    for r in cases:
        assert r.status_code >= 400
        assert r.json()["error"]["request_id"] == r.headers["X-Request-ID"], r.text


def test_access_log_lines_carry_the_request_id(client, captured):
    ok = client.post(
        "/v1/embed",
        files=[("images", ("a.png", image_bytes(), "image/png"))],
        headers={"X-Request-ID": "req-ok"},
    )
    assert ok.status_code == 200 and ok.headers["X-Request-ID"] == "req-ok"
    bad_search(client, headers={"X-Request-ID": "req-bad"})
    lines = captured.getvalue().splitlines()
    access = [line for line in lines if " server.access " in line]
    assert any("[req-ok]: POST /v1/embed 200 " in line for line in access), lines
    assert any("[req-bad]: POST /v1/search 400 " in line for line in access), lines
    assert all(" ms" in line for line in access)


def test_the_access_log_can_be_turned_off(tmp_path, captured):
    with make_client(tmp_path, access_log=False) as client:
        bad_search(client)
    assert " server.access " not in captured.getvalue()


def test_an_unexpected_failure_is_a_500_with_the_id_logged_with_its_traceback(
    client, captured, monkeypatch
):
    service = client.app.state.service

    def broken(*args, **kwargs):
        raise ZeroDivisionError("secret internals")

    monkeypatch.setattr(service, "stats", broken)
    r = client.get("/v1/gallery/stats", headers={"X-Request-ID": "boom-1"})
    error = r.json()["error"]
    assert r.status_code == 500 and error["type"] == "InternalError"
    assert error["request_id"] == "boom-1" and "secret" not in error["message"]
    text = captured.getvalue()
    assert "[boom-1]" in text and "ZeroDivisionError" in text


def test_json_log_lines():
    handler = logs.make_handler("json", io.StringIO())
    logger = logging.getLogger("server.test_json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with logs.bind_request_id("abc") as rid:
            logger.warning("hello %s", "there")
        logger.warning("outside")
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in handler.stream.getvalue().splitlines())
    assert rid == "abc"
    assert first["message"] == "hello there" and first["request_id"] == "abc"
    assert first["level"] == "WARNING" and first["logger"] == "server.test_json"
    assert "time" in first and "request_id" not in second


def test_uvicorn_lines_use_the_same_handler():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    uvicorn = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).propagate)
               for n in logs.UVICORN_LOGGERS}  # fmt: skip
    handler = logs.configure_logging("info", "json")
    try:
        for name in logs.UVICORN_LOGGERS:
            assert logging.getLogger(name).handlers == []
            assert logging.getLogger(name).propagate
        assert root.handlers == [handler]
        assert isinstance(handler.formatter, logs.JsonFormatter)
    finally:
        root.handlers[:], root.level = saved
        for name, (handlers, propagate) in uvicorn.items():
            logging.getLogger(name).handlers[:] = handlers
            logging.getLogger(name).propagate = propagate


def test_log_settings_are_flags():
    from server.cli import settings_from_args

    s = settings_from_args(["--log-format", "json", "--no-access-log"])
    assert (s.log_format, s.access_log) == ("json", False)
    assert ServerSettings().access_log is True and ServerSettings().log_format == "text"
