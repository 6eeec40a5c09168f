"""The overview page and its JSON twin, and the browser libraries served from packages.

    GET /                          page (node cards, charts, the cluster table, recent crashes)
    GET /api/overview[?since=]     every node's summary and chart series
    GET /vendor/plotly.min.js      from the ``plotly`` Python package
    GET /vendor/socket.io.min.js   from ``web/node_modules`` (``npm ci``)

The overview's "recent crashes and restarts" start from ``/api/events`` and
follow the nodes' batches; the cluster table starts from ``/api/cluster``
(:mod:`observer.views.cluster`).

Threading rules
    Request handlers only; they read the thread-safe state objects.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, send_file

from .common import arg_float, render_page, state

__all__ = ["blueprint"]

blueprint = Blueprint("pages", __name__)


@blueprint.get("/")
def overview() -> Any:
    return render_page("overview", "Overview")


@blueprint.get("/api/overview")
def api_overview() -> Any:
    since = arg_float("since")
    nodes, series = [], {}
    for att in state().manager.list():
        nodes.append(att.model.summary() | {"attachment": att.info()})
        series[att.name] = att.model.series(since)
    return {"nodes": nodes, "series": series}


def _plotly_js() -> Path | None:
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"
    return path if path.is_file() else None


def _missing(message: str) -> Response:
    return Response(f"/* {message} */\n", status=404, mimetype="text/javascript")


@blueprint.get("/vendor/plotly.min.js")
def vendor_plotly() -> Any:
    path = _plotly_js()
    if path is None:
        return _missing("plotly.min.js not found: install the 'plotly' package (pip install -e .)")
    return send_file(path, mimetype="text/javascript", max_age=3600)


@blueprint.get("/vendor/socket.io.min.js")
def vendor_socketio() -> Any:
    web = Path(str(current_app.static_folder)).parent  # web/static -> web/
    path = web / "node_modules" / "socket.io-client" / "dist" / "socket.io.min.js"
    if not path.is_file():
        return _missing("socket.io.min.js not found: run `npm ci` in web/ (the Makefile does)")
    return send_file(path, mimetype="text/javascript", max_age=3600)
