"""Log records: the request id on every line of a request, and the JSON format for deployments.

Log calls name an event (``"<app>.<event>"``) and pass ids in ``extra=`` (``run``, ``job``,
``attempt``, ``user_id``...), never message contents: prompts and answers stay in the database.
With ``STEERLAB_LOG_FORMAT=json`` each record is one JSON object per line: ``timestamp``,
``level``, ``logger``, ``message``, ``process``, ``request_id`` (inside an HTTP request) and every
``extra`` field.
"""

from __future__ import annotations

import logging
import re
import uuid
from contextvars import ContextVar
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

request_id: ContextVar[str | None] = ContextVar("steerlab_request_id", default=None)

_ACCEPTED_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id_from(header: str | None) -> str:
    """The caller's ``X-Request-ID`` when it is a plain token (a proxy's), else a new one."""
    if header and _ACCEPTED_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


_SECRET_SEGMENT = re.compile(r"(/shared/)[^/]+")


def loggable_path(path: str) -> str:
    """A URL path without its secrets (share tokens; query strings are never logged)."""
    return _SECRET_SEGMENT.sub(r"\1[token]", path)


class RequestIdFilter(logging.Filter):
    """Adds the current request's id (if any) to every record a handler emits.

    Django logs a request's 4xx/5xx (``django.request``) after the middleware has returned, with
    the request in ``extra``: the id is read off the request then, and the path in its message
    loses its secrets (``loggable_path``).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        request = getattr(record, "request", None)
        if not hasattr(record, "request_id"):
            current = request_id.get() or getattr(request, "request_id", None)
            if current is not None:
                record.request_id = current
        path = getattr(request, "path", None)
        if path and isinstance(record.args, tuple):
            record.args = tuple(loggable_path(a) if a == path else a for a in record.args)
        return True


class JsonFormatter(_JsonFormatter):
    """One JSON object per record, with an ISO 8601 UTC ``timestamp``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(
            "%(levelname)s %(name)s %(message)s %(process)d",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp=True,
            # Django passes the request object itself with its request logs: its id is enough.
            # (and uvicorn, its message with terminal colours).
            reserved_attrs=[*RESERVED_ATTRS, "request", "color_message"],
        )
