"""The observer's HTTP errors: typed exceptions, one JSON shape, one handler.

Every JSON answer that is an error has the same body::

    {"ok": false, "error": "<code>", "message": "<for a human>"}

with an HTTP status that says the class of problem. Route code raises one of
the :class:`ApiError` subclasses below (or lets an :class:`agent.client.AgentError`,
an :class:`observer.store.AuditError` or :class:`~observer.store.StoreError`
through); :func:`install` registers the one handler that turns them -- and
Werkzeug's own 400/404/405/413 and any unexpected exception (500, logged,
never a traceback to the client) -- into that shape. Page routes (not
``/api/...``, and a browser asking for HTML) get a short HTML page instead of
JSON, with the same status.

Threading rules
    Pure functions and exception classes; the handler runs on the request's thread.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify, request
from markupsafe import escape
from werkzeug.exceptions import HTTPException

from agent import protocol as P
from agent.client import AgentError

from .attach import E_NOT_CONNECTED
from .store import AuditError, StoreError

__all__ = [
    "AGENT_STATUS",
    "ApiError",
    "BadRequest",
    "Conflict",
    "Forbidden",
    "NotFound",
    "Unavailable",
    "error_body",
    "error_response",
    "install",
]

log = logging.getLogger("observer.errors")

AGENT_STATUS = {
    P.E_NO_SUCH_PROCESS: 404,
    P.E_BAD_ARGS: 400,
    P.E_NOT_PERMITTED: 403,
    P.E_TIMEOUT: 504,
    P.E_BUSY: 503,
    P.E_UNKNOWN_COMMAND: 400,  # e.g. suspend on an asyncio node
    E_NOT_CONNECTED: 503,
}
"""HTTP status for an agent's error code (502 for any other)."""


class ApiError(Exception):
    """A request the observer refuses or cannot serve. Subclasses set the status
    and a default code; ``code`` names the problem for programs (``unknown_node``,
    ``bad_query``...), ``message`` explains it to a person."""

    status = 500
    code = "internal"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class BadRequest(ApiError):
    """400: a query parameter or body the route cannot use (``bad_query``, ``bad_json``, ``bad_args``...)."""

    status = 400
    code = "bad_request"


class Forbidden(ApiError):
    """403: the login may not do this, or the server does not allow it."""

    status = 403
    code = "forbidden"


class NotFound(ApiError):
    """404: no such node, process, crash report, experiment..."""

    status = 404
    code = "not_found"


class Conflict(ApiError):
    """409: the request clashes with the current state (a node name taken, an experiment running)."""

    status = 409
    code = "conflict"


class Unavailable(ApiError):
    """503: a part the request needs is not there now (the agent link, the audit log)."""

    status = 503
    code = "unavailable"


def error_body(code: str, message: str) -> dict[str, Any]:
    """The one error shape."""
    return {"ok": False, "error": code, "message": message}


def error_response(status: int, code: str, message: str) -> Response:
    """The one error shape as a JSON response."""
    resp = jsonify(error_body(code, message))
    resp.status_code = status
    return resp


def as_api_error(exc: BaseException) -> ApiError:
    """Any exception as the :class:`ApiError` the client sees."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        return ApiError(exc.description or code, code=code, status=exc.code or 500)
    if isinstance(exc, AgentError):
        return ApiError(exc.message, code=exc.code, status=AGENT_STATUS.get(exc.code, 502))
    if isinstance(exc, AuditError):
        return Unavailable(str(exc), code="audit_unavailable")
    if isinstance(exc, StoreError):
        return Unavailable("the history store cannot be read", code="store_unavailable")
    return ApiError("internal error (see the server log)")


def _wants_json() -> bool:
    if request.path.startswith("/api/"):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{status} {code}</title>
<link rel="stylesheet" href="/static/css/app.css"></head>
<body><main class="panel"><h1>{status}</h1><p>{message}</p><p><a href="/">Overview</a></p></main></body></html>
"""


def install(app: Flask) -> None:
    """Register the one error handler on ``app``."""

    @app.errorhandler(Exception)
    def _handle(exc: Exception) -> Any:
        err = as_api_error(exc)
        if err.status >= 500 and not isinstance(exc, (ApiError, HTTPException, AgentError, StoreError)):
            log.error("observer: unexpected error on %s %s", request.method, request.path, exc_info=exc)
        elif isinstance(exc, StoreError) and not isinstance(exc, AuditError):
            log.error("observer: history store error on %s: %s", request.path, exc)
        if _wants_json():
            return error_response(err.status, err.code, err.message)
        html = _HTML.format(status=err.status, code=escape(err.code), message=escape(err.message))
        return Response(html, status=err.status, mimetype="text/html")
