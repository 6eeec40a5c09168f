"""The audit log in the UI: the ``/audit`` page and its exports.

``GET /audit`` is the page (``web/templates/audit.html``,
``web/static/js/views/audit.js``), fed by the existing JSON twin
``/api/audit``. ``GET /api/audit/export?format=csv|json[&node=N][&limit=N]``
downloads the rows (newest first) as a file. Every logged-in session may read
the audit log; it holds who did what, never a token.

Threading rules
    Request handlers only; the store is thread-safe.
"""

from __future__ import annotations

import csv
import io
import json
import time
from typing import Any

from flask import Flask, Response, current_app, render_template, request

from .pages import page_config

__all__ = ["COLUMNS", "register", "to_csv"]

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


def register(app: Flask) -> None:
    @app.get("/audit")
    def audit_page() -> Any:
        cfg = page_config("audit")
        return render_template("audit.html", page_config=cfg, view="audit", node=None, pid=None, title="Audit log")

    @app.get("/api/audit/export")
    def audit_export() -> Any:
        fmt = request.args.get("format", "csv")
        if fmt not in ("csv", "json"):
            return {"ok": False, "error": "bad_query", "message": "format must be csv or json"}, 400
        raw = request.args.get("limit") or "100000"
        if not raw.isdigit() or not 1 <= int(raw) <= 1_000_000:
            return {"ok": False, "error": "bad_query", "message": "limit must be between 1 and 1000000"}, 400
        node = request.args.get("node") or None
        rows = current_app.extensions["observer"].store.audits(limit=int(raw), node=node)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        if fmt == "csv":
            body, mimetype = to_csv(rows), "text/csv; charset=utf-8"
        else:
            body, mimetype = json.dumps({"audit": rows}, default=str, indent=1), "application/json"
        resp = Response(body, mimetype=mimetype)
        resp.headers["Content-Disposition"] = f'attachment; filename="observer-audit-{stamp}.{fmt}"'
        return resp
