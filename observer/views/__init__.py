"""The observer's routes: one Flask Blueprint per area, each page with its JSON twin.

=================  ==========================================================
``pages``          the overview and its twin, vendored browser libraries
``nodes``          one node's tree, processes and inspector; process actions
``history``        events, timeline, time travel
``crashes``        crash groups and reports, the flight recorder
``audit``          the audit log and its exports
``chaos``          chaos experiments
``cluster``        every node's health; nodes added and removed at run time
``trace``          message traces: start, live sequence chart, replay, export
``sessions``       login sessions: the list, logging out one or every one of a token
``apidoc``         ``/api/openapi.json``, generated from these routes
=================  ==========================================================

Errors are raised as the typed exceptions of :mod:`observer.errors` and
answered in its one JSON shape by its one handler; :func:`register` installs
both. Shared helpers (input, lookup, pages, gated actions) are in
:mod:`observer.views.common`.
"""

from __future__ import annotations

from flask import Flask

from .. import errors
from . import apidoc, audit, chaos, cluster, crashes, history, nodes, pages, sessions, trace

__all__ = ["BLUEPRINTS", "register"]

BLUEPRINTS = (
    pages.blueprint,
    nodes.blueprint,
    history.blueprint,
    crashes.blueprint,
    audit.blueprint,
    chaos.blueprint,
    cluster.blueprint,
    trace.blueprint,
    sessions.blueprint,
    apidoc.blueprint,
)


def register(app: Flask) -> None:
    """Register every Blueprint and the error handler on ``app``."""
    errors.install(app)
    for bp in BLUEPRINTS:
        app.register_blueprint(bp)
