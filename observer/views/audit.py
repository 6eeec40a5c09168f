"""The audit log: the audit page, its JSON twin and its exports.

    GET /audit                                            page
    GET /api/audit[?node=&limit=]                         rows, newest first
    GET /api/audit/export?format=csv|json[&node=&limit=]  the rows as a file

Every logged-in session may read the audit log; it holds who did what, never
a token. New rows and results are pushed to the ``audit`` feed of ``/live``
(:mod:`observer.live`).

Threading rules
    Request handlers only; the store is thread-safe.
"""

from __future__ import annotations

import csv
import io
import json
import time
from typing import Any

from flask import Blueprint, Response, request

from ..errors import BadRequest
from .common import arg_int, arg_str, render_page, state

__all__ = ["COLUMNS", "blueprint", "to_csv"]

blueprint = Blueprint("audit", __name__)

COLUMNS = ("id", "time", "who", "from_addr", "node", "action", "target", "args", "ok", "result", "done_time")


def to_csv(rows: list[dict[str, Any]]) -> str:
    """The rows as CSV (``args`` and ``result`` as JSON text; a leading ``=+-@`` is
    quoted with ``'`` so that a spreadsheet never runs a cell as a formula)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(COLUMNS)
    for r in rows:
        out = []
        for c in COLUMNS:
            v = r.get(c)
            if c in ("args", "result") and v is not None:
                v = json.dumps(v, default=str, separators=(",", ":"))
            text = "" if v is None else str(v)
            if text[:1] in ("=", "+", "-", "@") and c not in ("time", "done_time", "id", "ok"):
                text = "'" + text
            out.append(text)
        w.writerow(out)
    return buf.getvalue()


@blueprint.get("/audit")
def audit_page() -> Any:
    return render_page("audit", "Audit log")


@blueprint.get("/api/audit")
def api_audit() -> Any:
    return {"audit": state().store.audits(limit=arg_int("limit", 200, 1, 5000), node=arg_str("node"))}


@blueprint.get("/api/audit/export")
def audit_export() -> Any:
    fmt = request.args.get("format", "csv")
    if fmt not in ("csv", "json"):
        raise BadRequest("format must be csv or json", code="bad_query")
    limit = arg_int("limit", 100_000, 1, 1_000_000)
    rows = state().store.audits(limit=limit, node=arg_str("node"))
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    if fmt == "csv":
        text, mimetype = to_csv(rows), "text/csv"  # Flask adds "; charset=utf-8"
    else:
        text, mimetype = json.dumps({"audit": rows}, default=str, indent=1), "application/json"
    resp = Response(text, mimetype=mimetype)
    resp.headers["Content-Disposition"] = f'attachment; filename="observer-audit-{stamp}.{fmt}"'
    return resp
