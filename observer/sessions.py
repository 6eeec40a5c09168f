"""Server-side login sessions: idle and absolute expiry, revocation.

The signed cookie only carries a session id; the session itself lives here,
and in the history database (:mod:`observer.db.sessions`) so that the Audit
page can list it and a revocation is on record. A session is alive while it
is not revoked, not past ``max_age`` since login (absolute expiry), and was
seen within ``idle`` seconds (idle expiry; any request or live connection of
the session counts). Logging out revokes the session; an operator can log
out every session made with the same login token (a leaked token's
sessions, say) at once.

Several servers may share one database (PostgreSQL): a session is made and
used on one of them (each signs its own cookies), but any of them may end it
(the Audit page lists them all). Each server's watcher thread
(:meth:`SessionStore.watch`) asks the database every ``recheck`` seconds (2 s)
which of its live sessions were revoked, wherever, and ends them here too:
refused from the next request on, their live connections closed.

Threading rules
    Any thread: the in-memory table is guarded by a lock held for a few
    instructions; database writes go to its writer thread (creating and
    revoking wait for the commit, activity is written behind, at most once a
    minute per session). Revocation listeners run on the revoking thread, or
    on the watcher thread for a revocation made by another server.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from .db import sessions as sessions_db
from .db.database import Database

__all__ = ["IDLE", "MAX_AGE", "SessionStore", "fingerprint"]

log = logging.getLogger("observer.sessions")

IDLE = 8 * 3600.0
"""Seconds without a request or live connection after which a session ends."""
MAX_AGE = 7 * 24 * 3600.0
"""Seconds after login after which a session ends, however active."""
RECHECK = 2.0
"""Seconds between two looks at the database for sessions revoked by another server."""
_TOUCH_EVERY = 60.0
_ENDED_KEPT = 10_000


def fingerprint(token: str) -> str:
    """What identifies a login token in the sessions table (never the token itself)."""
    return hashlib.sha256(b"observer-login-token|" + token.encode()).hexdigest()[:16]


class SessionStore:
    """The live sessions of this server, backed by the history database."""

    def __init__(self, db: Database, *, idle: float = IDLE, max_age: float = MAX_AGE, recheck: float = RECHECK) -> None:
        self.db = db
        self.idle = idle
        self.max_age = max_age
        self.recheck = recheck
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._lock = threading.Lock()
        self._live: dict[str, dict[str, Any]] = {}
        self._listeners: list[Callable[[set[str]], None]] = []
        self._ended: dict[str, None] = {}
        """Sessions that expired here (oldest first, at most :data:`_ENDED_KEPT`): never live again."""
        self._links: set[str] = set()
        """Fingerprints of the login tokens already exchanged through a URL (``GET /login?token=``)."""
        now = time.time()
        try:
            for row in sessions_db.load_live(db, now):
                self._live[row["id"]] = row
        except Exception as exc:  # an unreadable history must not stop the server
            log.error("observer: could not load the login sessions: %s", exc)

    def claim_link(self, token: str) -> bool:
        """Whether ``token`` may be exchanged through a URL now: once per server run
        (afterwards only the login form, which keeps it out of URLs)."""
        fp = fingerprint(token)
        with self._lock:
            if fp in self._links:
                return False
            self._links.add(fp)
            return True

    def watch(self) -> SessionStore:
        """Start the watcher thread (revocations made by other servers); returns self."""
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name="observer-sessions", daemon=True)
            self._watcher.start()
        return self

    def close(self) -> None:
        """Stop the watcher thread. Idempotent."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(10)
            self._watcher = None

    def _watch(self) -> None:
        failing = False
        while not self._stop.wait(self.recheck):
            try:
                self.sync()
            except Exception as exc:  # the database away for a while: try again next time (logged once)
                if not failing:
                    log.warning("observer: could not check the login sessions for revocations: %s", exc)
                failing = True
            else:
                if failing:
                    log.warning("observer: checking the login sessions for revocations again")
                failing = False

    def sync(self) -> set[str]:
        """End here the live sessions that were revoked in the database (by another server
        sharing it); returns their ids."""
        with self._lock:
            sids = list(self._live)
        if not sids:
            return set()
        gone = sessions_db.revoked_among(self.db, sids)
        if not gone:
            return set()
        with self._lock:
            gone = {s for s in gone if self._live.pop(s, None) is not None}
        if gone:
            log.info("observer: %d login session(s) revoked by another server ended here", len(gone))
            self._revoked(gone)
        return gone

    def on_revoke(self, fn: Callable[[set[str]], None]) -> None:
        """Call ``fn(session ids)`` when sessions are revoked (to close their live connections)."""
        self._listeners.append(fn)

    def start(self, token: str, who: str, role: str, *, addr: str | None, agent: str | None) -> str:
        """A new session for a login with ``token``; returns its id. Raises if it cannot be stored."""
        now = time.time()
        sid = secrets.token_urlsafe(18)
        row: dict[str, Any] = {
            "id": sid,
            "token": fingerprint(token),
            "who": who,
            "role": role,
            "created": now,
            "last_seen": now,
            "expires": now + self.max_age,
            "revoked": None,
            "revoked_by": None,
            "from_addr": addr,
            "agent": (agent or "")[:200] or None,
        }
        sessions_db.create(self.db, row)
        with self._lock:
            self._live[sid] = row
        return sid

    def alive(self, sid: str | None, *, touch: bool = True) -> bool:
        """Whether ``sid`` is a live session (and, with ``touch``, note the activity)."""
        if not sid:
            return False
        now = time.time()
        write = False
        with self._lock:
            row = self._live.get(sid)
        if row is None:
            if sid in self._ended:
                return False
            row = self._shared(sid)  # made by another server sharing the history (a signed cookie: never guessed)
            if row is None:
                return False
        with self._lock:
            if now >= row["expires"] or now - row["last_seen"] >= self.idle:
                self._live.pop(sid, None)
                self._ended[sid] = None
                if len(self._ended) > _ENDED_KEPT:
                    del self._ended[next(iter(self._ended))]
                return False
            if touch and now - row["last_seen"] >= _TOUCH_EVERY:
                row["last_seen"] = now
                write = True
        if write:
            sessions_db.touch(self.db, sid, now)
        return True

    def _shared(self, sid: str) -> dict[str, Any] | None:
        try:
            row = sessions_db.get(self.db, sid)
        except Exception:
            return None
        if row is None or row["revoked"] is not None:
            return None
        with self._lock:
            return self._live.setdefault(sid, row)

    def get(self, sid: str | None) -> dict[str, Any] | None:
        """A live session, of this server or of another sharing the database; None if it
        is not live (unknown, revoked or past its absolute expiry)."""
        with self._lock:
            row = self._live.get(sid or "")
            if row is not None:
                return dict(row)
        other = self._stored(sid)
        return dict(other) if other is not None else None

    def _stored(self, sid: str | None) -> dict[str, Any] | None:
        """The database's row for ``sid`` if it is neither revoked nor past its absolute expiry."""
        if not sid:
            return None
        try:
            row = sessions_db.get(self.db, sid)
        except Exception:
            return None
        if row is None or row["revoked"] is not None or time.time() >= float(row["expires"]):
            return None
        return row

    def revoke(self, sid: str, by: str) -> bool:
        """End one session (logout), of this server or of another sharing the database (which
        ends it within ``recheck`` seconds). False if it was not live."""
        with self._lock:
            row = self._live.pop(sid, None)
        if row is None and self._stored(sid) is None:
            return False
        sessions_db.revoke(self.db, sid, time.time(), by)
        self._revoked({sid})
        return True

    def revoke_token_of(self, sid: str, by: str) -> int:
        """End every session made with the same login token as ``sid``; how many were live."""
        with self._lock:
            row = self._live.get(sid)
        if row is None:
            row = self._stored(sid)  # a session of another server
            if row is None:
                return 0
        token = row["token"]
        now = time.time()
        others = [r for r in sessions_db.active(self.db, now - self.max_age, limit=100_000) if r["token"] == token]
        with self._lock:
            gone = {s for s, r in self._live.items() if r["token"] == token}
            for s in gone:
                del self._live[s]
        live_elsewhere = {
            str(r["id"])
            for r in others
            if r["revoked"] is None and now < float(r["expires"]) and now - float(r["last_seen"]) < self.idle
        }
        sessions_db.revoke_token(self.db, token, now, by)
        self._revoked(gone)
        return len(gone | live_elsewhere)

    def listing(self, *, since: float | None = None) -> list[dict[str, Any]]:
        """Sessions seen in the last ``max_age`` (a day at least), live, expired or revoked, for the Audit page."""
        now = time.time()
        rows = sessions_db.active(self.db, since if since is not None else now - max(self.max_age, 86400.0))
        with self._lock:
            live = {s: dict(r) for s, r in self._live.items()}
            ended = set(self._ended)
        out = []
        for r in rows:
            cur = live.get(r["id"])
            last_seen = max(float(r["last_seen"]), float(cur["last_seen"]) if cur else 0.0)
            if r["revoked"] is not None:
                status = "revoked"
            elif r["id"] in ended or now >= r["expires"] or now - last_seen >= self.idle:
                status = "expired"
            else:
                status = "live"
            out.append(
                {
                    "id": r["id"],
                    "token": r["token"],
                    "who": r["who"],
                    "role": r["role"],
                    "from_addr": r["from_addr"],
                    "created": r["created"],
                    "last_seen": last_seen,
                    "expires": min(float(r["expires"]), last_seen + self.idle),
                    "status": status,
                    "revoked": r["revoked"],
                    "revoked_by": r["revoked_by"],
                }
            )
        return out

    def _revoked(self, sids: set[str]) -> None:
        for fn in list(self._listeners):
            try:
                fn(sids)
            except Exception:
                log.exception("observer: a session revocation listener failed")
