"""The server's log lines: one format for the app's and uvicorn's, request ids, JSON.

* :func:`configure_logging` installs one root handler (stderr) whose formatter every
  logger shares: the app's (``server.*``), uvicorn's (``uvicorn.error``; its own
  access log is replaced by ``server.access``, see :mod:`server.middleware`) and the
  libraries'. ``log_format="text"``::

      2025-01-31 12:00:00,123 INFO server.access [3f2a...]: GET /v1/search 200 12.3 ms

  ``log_format="json"``: one JSON object a line with ``time``, ``level``, ``logger``,
  ``message``, ``request_id`` (when the line belongs to a request) and ``exc_info``.
* :data:`request_id` holds the id of the request being served (the ``X-Request-ID``
  header when the client sent a usable one, else a generated one); every log line
  written while serving it carries it, and every error body names it
  (``error.request_id``). :func:`bind_request_id` sets it for other front ends (gRPC).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime

request_id: ContextVar[str | None] = ContextVar("reid_request_id", default=None)
"""The id of the request this code serves (``None`` outside a request)."""

HEADER = "X-Request-ID"
_USABLE = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(request_tag)s: %(message)s"
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


def new_request_id() -> str:
    """A fresh random id (32 hex digits)."""
    return uuid.uuid4().hex


def usable_request_id(value: str | None) -> str:
    """The client's id when it is 1-128 plain characters, else a new one."""
    if value and _USABLE.fullmatch(value):
        return value
    return new_request_id()


@contextlib.contextmanager
def bind_request_id(value: str | None = None) -> Iterator[str]:
    """Within: log lines carry ``value`` (a usable client id, or a new one); yields it."""
    rid = usable_request_id(value)
    token = request_id.set(rid)
    try:
        yield rid
    finally:
        request_id.reset(token)


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` (``None`` outside a request) and ``record.request_tag``."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = getattr(record, "request_id", None) or request_id.get()
        record.request_id = rid
        record.request_tag = f" [{rid}]" if rid else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid:
            out["request_id"] = rid
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def make_formatter(log_format: str) -> logging.Formatter:
    """The formatter of ``log_format`` ("text" or "json")."""
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        return logging.Formatter(TEXT_FORMAT)
    raise ValueError(f"unknown log format {log_format!r}; expected text or json")


def make_handler(log_format: str, stream: object = None) -> logging.Handler:
    """A stream handler (stderr) with the request-id filter and the format's formatter."""
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(make_formatter(log_format))
    return handler


def configure_logging(level: str = "info", log_format: str = "text") -> logging.Handler:
    """Route every logger (the app's, uvicorn's, libraries') to one handler; returns it.

    uvicorn must then be started with ``log_config=None`` (it keeps its hands off).
    """
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler = make_handler(log_format)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger("faiss").setLevel(logging.WARNING)
    return handler
