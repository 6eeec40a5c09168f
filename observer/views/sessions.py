"""Login sessions: the list on the Audit page, logout of one, of every session of a token.

    GET  /api/sessions                        recent sessions (operators: all; others: their token's)
    POST /api/sessions/<id>/revoke            end one session (one's own, or any for operators)
    POST /api/sessions/<id>/revoke-token      end every session of that session's login token (operators)

Each revocation is written to the audit log. The sessions themselves live in
:mod:`observer.sessions` (server-side, in the history database).

Threading rules
    Request handlers only; the session store is thread-safe.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request, session

from ..errors import NotFound
from ..permissions import is_operator, who
from .common import refuse, state

__all__ = ["blueprint"]

blueprint = Blueprint("sessions", __name__)


def _mine(rows: list[dict[str, Any]]) -> str | None:
    me = session.get("sid")
    return next((r["token"] for r in rows if r["id"] == me), None)


@blueprint.get("/api/sessions")
def api_sessions() -> Any:
    rows = state().sessions.listing()
    if not is_operator():
        token = _mine(rows)
        rows = [r for r in rows if r["token"] == token]
    me = session.get("sid")
    return {"sessions": [r | {"current": r["id"] == me} for r in rows], "operator": is_operator()}


def _target(sid: str) -> dict[str, Any]:
    row = state().sessions.get(sid)
    if row is None:
        raise NotFound(f"no live session {sid[:12]!r}", code="unknown_session")
    return row


@blueprint.post("/api/sessions/<sid>/revoke")
def revoke(sid: str) -> Any:
    row = _target(sid)
    if sid != session.get("sid") and not is_operator():
        refuse("session_revoke", "only operators end other sessions", target=sid[:12])
    st = state()
    aid = st.store.audit(who(), request.remote_addr, "session_revoke", sid[:12], {"who": row["who"]})
    ended = st.sessions.revoke(sid, by=who())
    st.store.audit_result(aid, {"ended": int(ended)})
    return {"ok": True, "ended": int(ended)}


@blueprint.post("/api/sessions/<sid>/revoke-token")
def revoke_token(sid: str) -> Any:
    row = _target(sid)
    if not is_operator():
        refuse("session_revoke_token", "only operators log out every session of a token", target=sid[:12])
    st = state()
    aid = st.store.audit(who(), request.remote_addr, "session_revoke_token", row["token"], {"who": row["who"]})
    ended = st.sessions.revoke_token_of(sid, by=who())
    st.store.audit_result(aid, {"ended": ended})
    return {"ok": True, "ended": ended}
