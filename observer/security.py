"""Login, session cookie, Origin/Host checks, CSRF and the destructive-action gate.

Everything here follows ``docs/web.md`` ("Serving and security"):

* a login token (compared in constant time) is exchanged at ``/login`` for a
  signed session cookie (HttpOnly, SameSite=Strict, Secure with TLS) holding
  a session id and a CSRF token; the session itself is server-side
  (:mod:`observer.sessions`: expiry, revocation), and a token given in a URL
  is exchanged once per server run (then only the form takes it);
* a token file others may read is warned about (:func:`loose_permissions`);
* every request's ``Host`` must be one the server is bound to (or an allowed
  origin's), and its ``Origin``, when sent, one of the allowed origins;
* state-changing requests carry ``X-CSRF-Token`` equal to the session's;
* pages without a session redirect to ``/login``, ``/api/`` requests get 401.

Threading rules
    Stateless apart from the immutable :class:`SecurityPolicy`; the hooks run
    on whatever thread (or green thread) serves the request.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import secrets
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, jsonify, redirect, render_template, request, session, url_for
from jinja2 import TemplateNotFound
from markupsafe import escape

from .errors import error_response
from .permissions import Grant, match, who

__all__ = [
    "CSRF_HEADER",
    "SecurityPolicy",
    "check_origin",
    "current_user",
    "install",
    "is_logged_in",
    "login_session",
    "loose_permissions",
    "session_of",
]

CSRF_HEADER = "X-CSRF-Token"
_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_OPEN_ENDPOINTS = frozenset({"login", "static"})
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

log = logging.getLogger("observer.security")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class SecurityPolicy:
    """What the server accepts; built once from the config."""

    login_token: str
    """The token exchanged for a session at ``/login``."""
    hosts: frozenset[str]
    """Accepted ``Host`` header values (``host:port``, lower case)."""
    origins: frozenset[str]
    """Accepted ``Origin`` header values (``scheme://host:port``)."""
    tls: bool = False
    grants: tuple[Grant, ...] = ()
    """Login tokens with their role and actions (:mod:`observer.permissions`);
    empty: ``login_token`` alone, as an operator with every action."""

    def all_grants(self) -> tuple[Grant, ...]:
        return self.grants or (Grant(self.login_token, name="operator"),)

    @classmethod
    def for_bind(
        cls,
        login_token: str,
        host: str,
        port: int,
        *,
        tls: bool = False,
        extra_origins: Iterable[str] = (),
        grants: tuple[Grant, ...] = (),
    ) -> SecurityPolicy:
        """The policy of a server bound to ``host:port``: that name (and the
        other loopback names when it is loopback) plus ``extra_origins``."""
        scheme = "https" if tls else "http"
        names = {host.lower()}
        if is_loopback(host):
            names |= {"127.0.0.1", "localhost", "[::1]"}
        elif host in ("0.0.0.0", "::"):
            names |= {"127.0.0.1", "localhost"}
        names = {f"[{n}]" if ":" in n and not n.startswith("[") else n for n in names}
        hosts = {f"{n}:{port}" for n in names}
        origins = {f"{scheme}://{h}" for h in hosts}
        for o in extra_origins:
            parts = urlsplit(o.strip())
            if not parts.scheme or not parts.netloc or o.strip() == "*":
                raise ValueError(f"allowed origin must be scheme://host[:port], not {o!r}")
            origins.add(f"{parts.scheme}://{parts.netloc}".lower())
            hosts.add(parts.netloc.lower())
        return cls(login_token, frozenset(hosts), frozenset(origins), tls, grants)


def check_origin(policy: SecurityPolicy, host: str | None, origin: str | None) -> str | None:
    """None if ``Host``/``Origin`` are acceptable, else a short reason."""
    if not host or host.lower() not in policy.hosts:
        return "host"
    if origin is not None and origin.lower() not in policy.origins:
        return "origin"
    return None


def is_logged_in() -> bool:
    return bool(session.get("auth")) and isinstance(session.get("sid"), str)


def loose_permissions(path: str) -> str | None:
    """A warning if the file at ``path`` (a token file) may be read by its group or others, else None."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if mode & 0o077:
        return (
            f"{path} can be read by other users (mode {stat.S_IMODE(mode):04o}): "
            f"anyone who reads it can log in or attach; chmod 600 {path}"
        )
    return None


def session_of(app: Flask, environ: dict[str, Any]) -> dict[str, Any] | None:
    """The logged-in session carried by a raw WSGI request's cookie, or None
    (no cookie, a bad signature, not logged in, or a server-side session that
    expired or was revoked). Used before Flask's request handling starts."""
    try:
        sess = app.session_interface.open_session(app, app.request_class(environ))
    except Exception:
        return None
    if sess is None or not sess.get("auth") or not isinstance(sess.get("sid"), str):
        return None
    sessions = getattr(app.extensions.get("observer"), "sessions", None)
    if sessions is not None and not sessions.alive(sess["sid"]):
        return None
    return dict(sess)


def current_user() -> str:
    """The token's label and the session id (the audit log's "who")."""
    return who()


def login_session(grant: Grant | None = None, *, sid: str | None = None) -> None:
    """Start a fresh authenticated session (new id and CSRF token) with ``grant``'s role and actions;
    ``sid``: its server-side session (:mod:`observer.sessions`)."""
    grant = grant or Grant("-", name="operator")
    session.clear()
    session["auth"] = True
    session["sid"] = sid or secrets.token_hex(8)
    session["csrf"] = secrets.token_urlsafe(24)
    session["role"] = grant.role
    session["actions"] = sorted(grant.actions)
    session["who"] = grant.name


def install(app: Flask, policy: SecurityPolicy) -> None:
    """Register the login routes and the per-request checks on ``app``."""
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=policy.tls,
    )

    @app.before_request
    def _guard() -> Response | None:
        reason = check_origin(policy, request.host, request.headers.get("Origin"))
        if reason is not None:
            return error_response(403, reason, f"{reason} not allowed")
        if request.endpoint in _OPEN_ENDPOINTS or request.path.startswith("/socket.io"):
            return None  # the Socket.IO connect handler checks the session itself
        if is_logged_in() and not _session_alive():
            session.clear()  # expired or revoked server-side: the cookie is worth nothing
        if not is_logged_in():
            if request.path.startswith("/api/"):
                return error_response(401, "login_required", "log in first (GET /login?token=...)")
            return redirect(url_for("login", next=request.path))  # type: ignore[return-value]
        if request.method in _UNSAFE_METHODS:
            given = request.headers.get(CSRF_HEADER, "")
            expected = str(session.get("csrf") or "")
            if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
                log.warning(
                    "observer: refused %s %s from %s (%s): missing or wrong %s",
                    request.method,
                    request.path[:200],
                    request.remote_addr,
                    who(),
                    CSRF_HEADER,
                )
                _note_refusal("csrf", f"{request.method} {request.path[:200]}", "missing or wrong CSRF header")
                return error_response(403, "csrf", f"missing or wrong {CSRF_HEADER} header")
        return None

    @app.after_request
    def _headers(resp: Response) -> Response:
        resp.headers.setdefault("Referrer-Policy", "no-referrer")
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("X-Frame-Options", "DENY")
        resp.headers.setdefault("Content-Security-Policy", _CSP)
        if request.path.startswith("/api/") or request.endpoint == "login":
            resp.headers.setdefault("Cache-Control", "no-store")
        return resp

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        given = request.form.get("token") if request.method == "POST" else request.args.get("token")
        if given is None:
            return _login_form(app, None)
        grant = match(policy.all_grants(), given)
        if grant is None:
            log.warning("observer: wrong login token from %s", request.remote_addr)
            _audit_wrong_login()
            return _login_form(app, "wrong token"), 403
        sessions = getattr(current_app.extensions.get("observer"), "sessions", None)
        if request.method == "GET" and sessions is not None and not sessions.claim_link(grant.token):
            # the token in a URL (printed, in a browser's history, in a proxy's log) works once
            log.warning("observer: a used login link again from %s", request.remote_addr)
            refusals = getattr(current_app.extensions.get("observer"), "refusals", None)
            if refusals is not None:
                msg = "login link used again"
                refusals.note("login", "link_used", who=grant.name, addr=request.remote_addr, message=msg)
            return _login_form(app, "this login link was already used: paste the token into the form"), 403
        sid = None
        if sessions is not None:
            sid = sessions.start(
                grant.token, grant.name, grant.role, addr=request.remote_addr, agent=request.headers.get("User-Agent")
            )
        login_session(grant, sid=sid)
        nxt = request.values.get("next") or "/"
        if not nxt.startswith("/") or nxt.startswith("//") or "\\" in nxt:  # no open redirect
            nxt = "/"
        return redirect(nxt)

    @app.route("/logout", methods=["POST"])
    def logout() -> Any:
        sessions = getattr(current_app.extensions.get("observer"), "sessions", None)
        if sessions is not None and isinstance(session.get("sid"), str):
            sessions.revoke(session["sid"], by=who())  # a copy of the cookie is worth nothing now
        session.clear()
        return jsonify({"ok": True})


def _audit_wrong_login() -> None:
    state = current_app.extensions.get("observer")
    if state is None:
        return
    refusals = getattr(state, "refusals", None)
    if refusals is not None:
        refusals.note("login", "wrong_token", who="anonymous", addr=request.remote_addr, message="wrong login token")
        return
    try:
        aid = state.store.audit("anonymous", request.remote_addr, "login", None, {})
        state.store.audit_result(aid, {"error": "wrong_token", "message": "wrong login token"}, ok=False)
    except Exception as exc:
        log.error("observer: could not audit a wrong login token: %s", exc)


def _session_alive() -> bool:
    sessions = getattr(current_app.extensions.get("observer"), "sessions", None)
    return sessions is None or bool(sessions.alive(session.get("sid")))


def _note_refusal(action: str, target: str, message: str) -> None:
    """A refusal of this request, to the coalescing refusal log (:mod:`observer.refusals`)."""
    refusals = getattr(current_app.extensions.get("observer"), "refusals", None)
    if refusals is not None:
        refusals.note(action, action, who=who(), addr=request.remote_addr, target=target, message=message)


_LOGIN = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>observer: log in</title></head>
<body><form method="post" action="/login">{error}
<label>Login token <input type="password" name="token" autocomplete="off" autofocus></label>
<button type="submit">Log in</button></form></body></html>
"""


def _login_form(app: Flask, error: str | None) -> Any:
    """``web/templates/login.html``, or a bare form if the templates are missing."""
    try:
        return render_template("login.html", error=error, next=request.values.get("next"))
    except TemplateNotFound:
        return _LOGIN.format(error=f"<p role='alert'>{escape(error)}</p>" if error else "")
