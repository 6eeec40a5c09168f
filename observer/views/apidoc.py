"""The JSON API's own description.

    GET /api/openapi.json    OpenAPI 3.0, generated from the routes (:mod:`observer.openapi`)

Threading rules
    Request handlers only; the document is built once per app and cached.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app

from ..openapi import describe

__all__ = ["blueprint"]

blueprint = Blueprint("apidoc", __name__)


@blueprint.get("/api/openapi.json")
def openapi() -> Any:
    """The OpenAPI description of this API."""
    doc = current_app.extensions.get("openapi")
    if doc is None:
        doc = current_app.extensions["openapi"] = describe(current_app)
    return doc
