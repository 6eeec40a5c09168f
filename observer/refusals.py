"""Refusals in the audit log, coalesced and rate-limited.

Every refusal (wrong login token, CSRF, permission, a Socket.IO connection or
event refused, an agent or dial-in refused) goes through :meth:`RefusalLog.note`.
A flood must not fill the disk, nor slow the server down, so:

* the first refusal of a *kind* (``action``, ``reason``, client address, who,
  node) is written at once, as one audit row with its result (``ok=False``), as
  the refusals of a permission check always were;
* the same kind again within ``window`` seconds is only counted; the count goes
  out as one row (``args: {"repeated": n, "first": t0, "last": t1}``) when the
  window ends (:meth:`RefusalLog.flush`, called by a small timer thread);
* at most ``max_rows`` rows are written per ``window`` in all; beyond that the
  refusals are counted in one ``refusals_suppressed`` row per window;
* at most ``max_kinds`` kinds are remembered (memory bound); more go to the
  suppressed count as well.

So a flood writes at most ``max_rows + 1`` rows per window, whatever it sends.

Threading rules
    :meth:`note` runs on any request, handler or attach-loop thread: it takes a
    short lock and writes at most one row, synchronously only when ``sync``
    (a request thread; the store's ``audit`` waits for the commit) and
    otherwise through the timer thread. :meth:`close` stops the timer.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RefusalLog"]

log = logging.getLogger("observer.refusals")

Key = tuple[str, str, str, str, str]


@dataclass(slots=True)
class _Kind:
    first: float
    last: float
    count: int = 0
    """Refusals seen since the last row written for this kind."""
    target: str | None = None
    args: dict[str, Any] = field(default_factory=dict)


class RefusalLog:
    """Coalesces refusals into audit rows (see the module docstring)."""

    def __init__(self, store: Any, *, window: float = 60.0, max_rows: int = 30, max_kinds: int = 1000) -> None:
        self.store = store
        self.window = window
        self.max_rows = max_rows
        self.max_kinds = max_kinds
        self._lock = threading.Lock()
        self._kinds: dict[Key, _Kind] = {}
        self._rows = 0
        """Rows written in the current window."""
        self._window_start = time.monotonic()
        self._suppressed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.seen = 0
        """Refusals noted since start (for tests and ``/api/health``-style counters)."""

    def start(self) -> RefusalLog:
        t = threading.Thread(target=self._run, name="observer-refusals", daemon=True)
        self._thread = t
        t.start()
        return self

    def close(self) -> None:
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(5)
        self.flush(force=True)

    def note(
        self,
        action: str,
        reason: str,
        *,
        who: str | None,
        addr: str | None,
        node: str | None = None,
        target: str | None = None,
        args: dict[str, Any] | None = None,
        message: str | None = None,
        sync: bool = True,
    ) -> None:
        """Count one refusal; write it now if it is the first of its kind in this window."""
        now = time.time()
        key: Key = (action, reason, addr or "-", who or "anonymous", node or "")
        write = False
        with self._lock:
            self.seen += 1
            self._roll(time.monotonic())
            kind = self._kinds.get(key)
            if kind is not None:
                kind.count += 1
                kind.last = now
                return
            if len(self._kinds) >= self.max_kinds or self._rows >= self.max_rows:
                self._suppressed += 1
                return
            self._kinds[key] = _Kind(now, now, 0, target, dict(args or {}))
            self._rows += 1
            write = True
        if write:
            result = {"error": reason, "message": message or reason}
            if sync:
                self._write(key, target, args or {}, result)
            else:
                threading.Thread(
                    target=self._write, args=(key, target, args or {}, result), name="observer-refusal", daemon=True
                ).start()

    def flush(self, *, force: bool = False) -> int:
        """Write the counts of the kinds whose window has ended (all with ``force``); returns rows written."""
        with self._lock:
            now = time.monotonic()
            if not force and now - self._window_start < self.window:
                return 0
            kinds, self._kinds = self._kinds, {}
            suppressed, self._suppressed = self._suppressed, 0
            self._window_start = now
            self._rows = 0
        written = 0
        for key, kind in kinds.items():
            if kind.count:
                args = {**kind.args, "repeated": kind.count, "first": kind.first, "last": kind.last}
                self._write(key, kind.target, args, {"error": key[1], "message": f"refused {kind.count} more times"})
                written += 1
        if suppressed:
            self._write(
                ("refusals_suppressed", "rate_limited", "-", "observer", ""),
                None,
                {"count": suppressed},
                {"error": "rate_limited", "message": f"{suppressed} refusals not written one by one"},
            )
            written += 1
        return written

    def _roll(self, now: float) -> None:
        # under the lock: a window that ended long ago is not held open by a flood
        if now - self._window_start >= 2 * self.window and self._thread is None:
            self._rows = 0
            self._window_start = now

    def _run(self) -> None:
        while not self._stop.wait(min(1.0, self.window / 4)):
            try:
                self.flush()
            except Exception:
                log.exception("observer: writing coalesced refusals failed")

    def _write(self, key: Key, target: str | None, args: dict[str, Any], result: dict[str, Any]) -> None:
        action, _reason, addr, who, node = key
        try:
            aid = self.store.audit(who, addr, action, target, args, node=node or None)
            self.store.audit_result(aid, result, ok=False)
        except Exception as exc:
            log.error("observer: could not audit a refused %s: %s", action, exc)
