"""The HTML pages (one per view) and the vendored-by-package browser libraries.

Every page renders a template from ``web/templates`` -- ``<view>.html`` if it
exists, else ``page.html`` -- with ``page_config`` (a dict) and ``config_json``
(the same, JSON-encoded and safe to place inside
``<script type="application/json" id="config">``), ``view``, ``node``,
``pid`` and ``title``. Page data comes from the JSON twins
(:mod:`observer.api`); pages only check that the node exists.

Threading rules
    Request handlers only; they read the thread-safe state objects.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from flask import Flask, Response, abort, current_app, render_template, request, send_file, session
from jinja2 import TemplateNotFound
from markupsafe import Markup, escape

from ..permissions import DESTRUCTIVE, granted_actions

__all__ = ["page_config", "register", "render_login"]

_FALLBACK = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<link rel="stylesheet" href="/static/css/app.css"></head>
<body data-view="{view}"><main id="app"></main>
<script type="application/json" id="config">{config}</script>
<script type="module" src="/static/js/app.js"></script></body></html>
"""

_LOGIN = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>observer: log in</title></head>
<body><form method="post" action="/login">{error}
<label>Login token <input type="password" name="token" autocomplete="off" autofocus></label>
<button type="submit">Log in</button></form></body></html>
"""


def _json_for_script(obj: Any) -> Markup:
    """JSON that cannot close the ``<script>`` element it sits in."""
    text = json.dumps(obj, separators=(",", ":"), default=str)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text)


def page_config(view: str, node: str | None = None, pid: str | None = None) -> dict[str, Any]:
    """The config embedded in every page (``docs/web.md``)."""
    state = current_app.extensions["observer"]
    actions = granted_actions()
    return {
        "csrf": session.get("csrf"),
        "allow_destructive": bool(state.allow_destructive) and bool(set(actions) & DESTRUCTIVE),
        "actions": actions,
        "role": session.get("role"),
        "nodes": state.nodes(),
        "node": node,
        "view": view,
        "pid": pid,
    }


def _render(view: str, title: str, node: str | None = None, pid: str | None = None) -> Any:
    state = current_app.extensions["observer"]
    if node is not None and state.model(node) is None:
        abort(404, description=f"no node {node!r}")
    cfg = page_config(view, node, pid)
    ctx = {"page_config": cfg, "config_json": _json_for_script(cfg), "view": view, "node": node, "pid": pid}
    ctx["title"] = title
    try:
        return render_template([f"{view}.html", "page.html"], **ctx)
    except TemplateNotFound:
        return _FALLBACK.format(title=escape(title), view=escape(view), config=ctx["config_json"])


def render_login(app: Flask, error: str | None) -> Any:
    try:
        return render_template("login.html", error=error, next=request.values.get("next"))
    except TemplateNotFound:
        return _LOGIN.format(error=f"<p role='alert'>{escape(error)}</p>" if error else "")


def _plotly_js() -> Path | None:
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"
    return path if path.is_file() else None


def register(app: Flask) -> None:
    from ..app import WEB_DIR

    @app.get("/")
    def overview() -> Any:
        return _render("overview", "Overview")

    @app.get("/nodes/<node>/tree")
    def tree_page(node: str) -> Any:
        return _render("tree", f"{node}: supervision tree", node)

    @app.get("/nodes/<node>/processes")
    def processes_page(node: str) -> Any:
        return _render("processes", f"{node}: processes", node)

    @app.get("/nodes/<node>/processes/<pid>")
    def process_page(node: str, pid: str) -> Any:
        return _render("process", f"{node}: {pid}", node, pid)

    @app.get("/events")
    def events_page() -> Any:
        return _render("events", "Events")

    @app.get("/vendor/plotly.min.js")
    def vendor_plotly() -> Any:
        path = _plotly_js()
        if path is None:
            return _missing("plotly.min.js not found: install the 'plotly' package (pip install -e .)")
        return send_file(path, mimetype="text/javascript", max_age=3600)

    @app.get("/vendor/socket.io.min.js")
    def vendor_socketio() -> Any:
        path = WEB_DIR / "node_modules" / "socket.io-client" / "dist" / "socket.io.min.js"
        if not path.is_file():
            return _missing("socket.io.min.js not found: run `npm ci` in web/ (the Makefile does)")
        return send_file(path, mimetype="text/javascript", max_age=3600)


def _missing(message: str) -> Response:
    return Response(f"/* {message} */\n", status=404, mimetype="text/javascript")
