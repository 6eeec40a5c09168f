"""The WSGI gate in front of Engine.IO: no unauthenticated connection holds the server.

Flask-SocketIO's middleware answers ``/socket.io/`` itself, before Flask's
``before_request`` hooks run, and a WebSocket accepted there holds its worker
(a thread with gunicorn's ``gthread`` worker) for as long as it stays open.
:class:`SocketGate` wraps that middleware and answers every ``/socket.io/``
request first:

* ``Host`` and ``Origin`` must be the server's (:func:`observer.security.check_origin`): 403;
* the request must carry a valid, live session cookie (signed, logged in, and
  its server-side session not expired or revoked): 401, before any upgrade;
* per-client caps: at most ``per_session`` open WebSockets per login session
  and ``per_addr`` per client address, and at most ``max_live`` in all (with a
  thread per WebSocket, the threads left over keep serving pages): 429.

A refusal is answered at once (a few hundred bytes, the connection closed)
and noted in the refusal log (:mod:`observer.refusals`, coalesced). Everything
else goes to Engine.IO unchanged.

Threading rules
    :meth:`SocketGate.__call__` runs on the serving thread (or greenlet) of
    each request; the counters are guarded by a lock held for a few
    instructions. A WebSocket's slot is released when its WSGI call returns.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask

from .security import check_origin, session_of

__all__ = ["SocketGate"]

log = logging.getLogger("observer.gate")

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class SocketGate:
    """WSGI middleware guarding ``/socket.io/`` (see the module docstring)."""

    def __init__(
        self,
        inner: WsgiApp,
        app: Flask,
        *,
        path: str = "/socket.io",
        per_session: int = 8,
        per_addr: int = 1024,
        max_live: int = 4096,
    ) -> None:
        self.inner = inner
        self.app = app
        self.path = path.rstrip("/")
        self.per_session = per_session
        self.per_addr = per_addr
        self.max_live = max_live
        self._lock = threading.Lock()
        self._by_sid: dict[str, int] = {}
        self._by_addr: dict[str, int] = {}
        self.live = 0
        """Open WebSockets through the gate now."""
        self.refused = 0

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO") or "")
        if not (path == self.path or path.startswith(self.path + "/")):
            return self.inner(environ, start_response)
        state = self.app.extensions["observer"]
        addr = str(environ.get("REMOTE_ADDR") or "-")
        reason = check_origin(state.policy, environ.get("HTTP_HOST"), environ.get("HTTP_ORIGIN"))
        if reason is not None:
            return self._refuse(start_response, 403, reason, f"{reason} not allowed", addr, "anonymous")
        sess = session_of(self.app, environ)
        if sess is None:
            return self._refuse(start_response, 401, "login_required", "log in first", addr, "anonymous")
        who = f"{sess.get('who') or 'anonymous'}/{sess.get('sid')}"
        websocket = str(environ.get("HTTP_UPGRADE") or "").lower() == "websocket"
        if not websocket:
            return self.inner(environ, start_response)
        sid = str(sess.get("sid"))
        with self._lock:
            if self.live >= self.max_live:
                full = "server_busy"
            elif self._by_sid.get(sid, 0) >= self.per_session or self._by_addr.get(addr, 0) >= self.per_addr:
                full = "too_many_sockets"
            else:
                full = ""
                self.live += 1
                self._by_sid[sid] = self._by_sid.get(sid, 0) + 1
                self._by_addr[addr] = self._by_addr.get(addr, 0) + 1
        if full:
            return self._refuse(start_response, 429, full, "too many live connections", addr, who)
        try:
            # the WebSocket's whole life happens inside this call (threading and gevent alike)
            out = self.inner(environ, start_response)
            if isinstance(out, list):
                return out
            return list(out)
        finally:
            with self._lock:
                self.live -= 1
                _down(self._by_sid, sid)
                _down(self._by_addr, addr)

    def _refuse(
        self, start_response: StartResponse, status: int, code: str, message: str, addr: str, who: str
    ) -> Iterable[bytes]:
        self.refused += 1
        refusals = getattr(self.app.extensions["observer"], "refusals", None)
        if refusals is not None:
            refusals.note("socket_connect", code, who=who, addr=addr, message=message, sync=False)
        body = json.dumps({"error": code, "message": message}).encode()
        phrase = {401: "UNAUTHORIZED", 403: "FORBIDDEN", 429: "TOO MANY REQUESTS"}[status]
        start_response(
            f"{status} {phrase}",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("Connection", "close"),
                ("Cache-Control", "no-store"),
            ],
        )
        return [body]


def _down(counts: dict[str, int], key: str) -> None:
    n = counts.get(key, 0) - 1
    if n > 0:
        counts[key] = n
    else:
        counts.pop(key, None)
