"""An OpenAPI 3.0 description of the JSON API, generated from the app's routes.

:func:`describe` walks the Flask ``url_map`` (every Blueprint's ``/api/``
rule: its path, its methods, its path parameters and their converters) and
the view functions' docstrings; every operation answers JSON, and every
error in the one shape of :mod:`observer.errors` (``{"ok": false, "error",
"message"}``). Served at ``GET /api/openapi.json`` (logged in, like the rest
of the API), it is what Schemathesis fuzzes the running server with
(``tests/security/test_fuzz_api.py``).

What it does not say: the query parameters (each view reads and checks its
own; a bad one is a 400) and the shape of each 2xx body beyond "a JSON
object" (the pages' JSON twins are documented in ``docs/web.md``).

Threading rules: pure; built once per app, on the first request for it.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Flask

__all__ = ["ERROR_SCHEMA", "describe"]

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "ok": {"type": "boolean", "enum": [False]},
        "error": {"type": "string"},
        "message": {"type": "string"},
    },
}
"""The one error shape (:func:`observer.errors.error_response`)."""

_ERRORS = {
    "400": "bad input (query, JSON body or arguments)",
    "401": "not logged in",
    "403": "refused: Host/Origin, CSRF, permission or destructive actions off",
    "404": "no such node, process, crash, experiment or session",
    "405": "method not allowed",
    "409": "conflicts with the current state",
    "413": "request body too large",
    "429": "too many requests",
    "502": "the agent answered with an error",
    "503": "the node is down or the history is unavailable",
    "504": "the agent did not answer in time",
}
_METHODS = ("get", "post", "put", "patch", "delete")
PRODUCES: dict[str, tuple[str, ...]] = {"audit.audit_export": ("text/csv", "application/json")}
"""Endpoints whose 200 is not only JSON (by endpoint name)."""
_CONVERTER = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")


def _param_schema(converter: str | None) -> dict[str, Any]:
    if converter == "int":
        return {"type": "integer", "minimum": 0}
    if converter == "float":
        return {"type": "number"}
    if converter == "path":
        return {"type": "string", "minLength": 1}
    return {"type": "string", "minLength": 1, "pattern": "^[^/]+$"}


def describe(app: Flask, *, title: str = "observer", version: str = "1") -> dict[str, Any]:
    """The OpenAPI document of ``app``'s ``/api/`` routes."""
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if not rule.rule.startswith("/api/"):
            continue
        params: list[dict[str, Any]] = []

        def _sub(m: re.Match[str], params: list[dict[str, Any]] = params) -> str:
            conv, name = m.group(1), m.group(2)
            params.append({"name": name, "in": "path", "required": True, "schema": _param_schema(conv)})
            return "{" + name + "}"

        path = _CONVERTER.sub(_sub, rule.rule)
        view = app.view_functions.get(rule.endpoint)
        doc = (view.__doc__ or "").strip().splitlines()[0] if view is not None and view.__doc__ else rule.endpoint
        ops = paths.setdefault(path, {})
        for method in sorted(m.lower() for m in (rule.methods or ()) if m.lower() in _METHODS):
            op: dict[str, Any] = {
                "operationId": f"{rule.endpoint}.{method}",
                "summary": doc,
                "parameters": params,
                "responses": {
                    "200": {
                        "description": "done",
                        "content": {t: {"schema": {}} for t in PRODUCES.get(rule.endpoint, ("application/json",))},
                    },
                    **{
                        code: {"description": text, "content": {"application/json": {"schema": ERROR_SCHEMA}}}
                        for code, text in _ERRORS.items()
                    },
                },
            }
            if method != "get":
                op["requestBody"] = {
                    "required": False,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            ops[method] = op
    return {
        "openapi": "3.0.3",
        "info": {"title": f"{title} JSON API", "version": version},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": "observer_session"},
                "csrf": {"type": "apiKey", "in": "header", "name": "X-CSRF-Token"},
            }
        },
        "security": [{"session": [], "csrf": []}],
    }
