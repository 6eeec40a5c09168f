"""The default server's front: gunicorn's ``gthread`` worker, where a thread only
ever gets a request that has fully arrived.

gunicorn's gthread worker accepts in its main loop (a selector) and parks idle
kept-alive connections there, but hands a new connection to a thread at its
first byte; the thread then reads the request head with blocking reads and no
deadline. 400 connections sending a byte now and then (slowloris) hold 400
threads, and every logged-in user waits. It also closes a finished connection
on its main loop with a blocking read of up to 2 s (``close_graceful``), so a
client that never closes its end stalls every other connection meanwhile.

:class:`FrontedThreadWorker` keeps each connection in the selector, reading
without blocking, until its request is complete, and only then hands it to the
thread pool (the bytes already read are given back to gunicorn's parser):

* a **deadline** for the whole request (TLS handshake, head and body):
  :data:`REQUEST_TIMEOUT` from accept, or from the first byte of the next
  request on a kept-alive connection; past it, the connection is closed;
* **per-address fairness**: at most :data:`PER_ADDR_PENDING` requests being
  read from one client address, and :data:`MAX_PENDING` in all; over either,
  the oldest request of that address (of the busiest address, when all are
  full) is dropped. A legitimate request arrives in milliseconds and is never
  the oldest;
* **accept never stops for a flood**: at the worker's connection cap the
  oldest idle kept-alive connection (closing one is always allowed in HTTP),
  else the oldest request being read, makes room;
* bodies are read here too, :data:`MAX_BUFFERED` in all for every request being
  read (past it, the one holding the most is dropped); what counts as a whole
  request, and what is refused at once, is :mod:`observer.front_request`'s;
* TLS handshakes happen here as well (non-blocking), with one SSL context
  built once, not one per connection;
* closing after ``Connection: close`` lingers in the selector (half-close,
  drain, close at EOF or after :data:`LINGER` s), never on the main loop.

A WebSocket still holds its thread for its life, once authenticated (the gate,
:mod:`observer.gate`, caps them below the thread count).

Threading rules
    Everything here runs on the worker's main thread (the selector loop):
    gunicorn calls ``accept``, the readable callbacks, ``enqueue_req`` and
    ``finish_request`` there; the pool's threads only run ``handle``.
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import ssl
import time
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from gunicorn import http
from gunicorn import sock as gsock
from gunicorn.workers.gthread import TConn, ThreadWorker

from .front_request import CONTINUE, MAX_BODY, MAX_HEAD, refusal, scan

__all__ = [
    "LINGER",
    "MAX_BODY",
    "MAX_HEAD",
    "MAX_PENDING",
    "PER_ADDR_PENDING",
    "REQUEST_TIMEOUT",
    "FrontedThreadWorker",
]

REQUEST_TIMEOUT = 10.0
"""Seconds for a whole request to arrive (handshake, head and body)."""
MAX_PENDING = 2048
"""Requests being read at once, in all."""
PER_ADDR_PENDING = 512
"""Requests being read at once from one client address."""
MAX_BUFFERED = 64 << 20
"""Bytes held in all by requests being read; over it, the request holding the most is dropped."""
LINGER = 2.0
"""Seconds a closed connection is drained before the socket is closed."""
ACCEPT_BATCH = 64
"""Connections accepted at most per turn of the worker's loop."""
MAX_LINGERING = 1024
"""Connections lingering at once; more are closed at once."""

_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError)


@dataclass(eq=False, slots=True)
class _Pending:
    """A request being read in the selector."""

    conn: Any
    """gunicorn's ``TConn``."""
    addr: str
    """The client's address (no port)."""
    deadline: float
    """``time.monotonic()`` by which the request must have arrived."""
    fd: int = -1
    """The socket's descriptor, as registered in the selector."""
    buf: bytearray = field(default_factory=bytearray)
    """What has arrived so far."""
    handshaken: bool = True
    """False while a TLS handshake is still going on."""
    need: int = -1
    """Bytes the whole request takes (head and body); -1 until the head is in."""
    writing: bool = False
    """Registered for write readiness too (a TLS handshake that must send)."""
    upgrade: bool = False
    """The request asks for a protocol upgrade (a WebSocket)."""
    counted: int = 0
    """``len(buf)`` as counted in the worker's total."""


class _Conn(TConn):
    """gunicorn's connection, whose closing after a response lingers in the worker's selector."""

    def __init__(self, cfg: Any, sock: Any, client: Any, server: Any, worker: FrontedThreadWorker) -> None:
        super().__init__(cfg, sock, client, server)
        self.worker = worker
        self.front_ready = False
        self.upgraded = False
        """The last request asked for an upgrade: the socket is shared with the WebSocket's threads."""

    def close(self, graceful: bool = False) -> None:
        if graceful and not self.upgraded:
            self.worker.linger(self.sock)
            return
        if self.upgraded:
            # simple-websocket's reader thread may still be in recv() on this very socket,
            # and closes it too: shut it down (which wakes that recv) rather than linger in
            # the selector with a descriptor another thread closes
            with _suppress():
                self.sock.shutdown(socket.SHUT_RDWR)
        super().close()


class FrontedThreadWorker(ThreadWorker):
    """gunicorn's gthread worker with a selector front (see the module docstring)."""

    request_timeout = REQUEST_TIMEOUT
    max_pending = MAX_PENDING
    per_addr_pending = PER_ADDR_PENDING

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending: dict[_Pending, None] = {}  # oldest first (insertion order = deadline order)
        self._by_addr: dict[str, dict[_Pending, None]] = {}
        self._lingering: deque[tuple[float, Any, int]] = deque()
        self._ssl_ctx: ssl.SSLContext | None = None
        self._buffered = 0
        """Bytes held by the requests being read (at most :data:`MAX_BUFFERED`)."""
        self.evicted = 0
        """Requests dropped to make room for others."""
        self.timed_out = 0
        """Requests that did not arrive within the deadline."""

    def init_process(self) -> None:
        if self.cfg.is_ssl:
            self._ssl_ctx = gsock.ssl_context(self.cfg)
        super().init_process()

    # -- gunicorn's hooks ---------------------------------------------------------------------

    def accept(self, listener: Any) -> None:
        """Accept what is waiting (up to :data:`ACCEPT_BATCH` at a time: under a flood the
        backlog empties faster than one connection per turn of the loop)."""
        for _ in range(ACCEPT_BATCH):
            if self.nr_conns >= self.worker_connections and not self._make_room():
                return
            try:
                client_sock, client_addr = listener.accept()
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE):
                    self._make_room()  # out of descriptors: the oldest waiting gives way
                    return
                if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                    raise
                return
            self._accepted(listener, client_sock, client_addr)

    def _accepted(self, listener: Any, client_sock: Any, client_addr: Any) -> None:
        self.nr_conns += 1
        client_sock.setblocking(False)
        conn = _Conn(self.cfg, client_sock, client_addr, listener.getsockname(), self)
        handshaken = True
        if self._ssl_ctx is not None:
            conn.sock = self._ssl_ctx.wrap_socket(
                client_sock,
                server_side=True,
                do_handshake_on_connect=False,
                suppress_ragged_eofs=self.cfg.suppress_ragged_eofs,
            )
            handshaken = False
        self._park(conn, b"", handshaken=handshaken, read_now=False)

    def set_accept_enabled(self, enabled: bool) -> None:
        """gunicorn stops accepting at the connection cap; we go on while a connection can
        make room (an idle kept-alive one, or a request still being read)."""
        super().set_accept_enabled(enabled or bool(self.keepalived_conns or self._pending))

    def on_client_socket_readable(self, conn: Any, client: Any) -> None:
        """A kept-alive connection has a next request coming: read it here first."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._park(conn, b"", handshaken=True, read_now=True)

    def enqueue_req(self, conn: Any) -> None:
        """The one way into the thread pool: only a connection whose request is complete."""
        if getattr(conn, "front_ready", False):
            conn.front_ready = False
            super().enqueue_req(conn)
            return
        # gunicorn hands back a kept-alive connection with bytes read ahead (a pipelined
        # request): read the rest of that request here too
        ahead = conn.parser.unreader.take_buffered() if conn.parser is not None else b""
        conn.sock.setblocking(False)
        self._park(conn, ahead, handshaken=True, read_now=False)

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        while self._pending:
            p = next(iter(self._pending))
            if p.deadline > now and self.alive:
                break
            self.timed_out += 1
            self._drop(p)
        while self._lingering and (self._lingering[0][0] <= now or not self.alive):
            _, sock, fd = self._lingering.popleft()
            self._unlinger(sock, fd)

    # -- the front -----------------------------------------------------------------------------

    def linger(self, sock: Any) -> None:
        """Close ``sock`` after a response: half-close now, drain what the client still
        sends until it closes or :data:`LINGER` s pass (RFC 9112 §9.6), without blocking."""
        try:
            sock.setblocking(False)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            _close(sock)
            return
        if len(self._lingering) >= MAX_LINGERING:
            _close(sock)
            return
        fd = self._register(sock, selectors.EVENT_READ, partial(self._on_linger_readable, sock))
        if fd < 0:
            _close(sock)
            return
        self._lingering.append((time.monotonic() + LINGER, sock, fd))

    def _on_linger_readable(self, sock: Any, _fileobj: Any) -> None:
        try:
            data = sock.recv(65536)
        except _WOULD_BLOCK:
            return
        except OSError:
            data = b""
        if not data:
            entry = next((x for x in self._lingering if x[1] is sock), None)
            if entry is not None:
                self._lingering.remove(entry)
                self._unlinger(sock, entry[2])

    def _unlinger(self, sock: Any, fd: int) -> None:
        self._unregister(fd)
        _close(sock)

    def _register(self, sock: Any, events: int, callback: Any) -> int:
        """Register ``sock``'s descriptor in the selector; returns it, or -1 if it is closed.
        By descriptor, not by socket: unregistering then works even once the socket is closed."""
        try:
            fd = int(sock.fileno())
        except (OSError, ValueError):
            return -1
        if fd < 0:
            return -1
        try:
            self.poller.register(fd, events, callback)
        except KeyError:  # a stale entry for a descriptor closed and reused since: replaced
            self._unregister(fd)
            try:
                self.poller.register(fd, events, callback)
            except (KeyError, ValueError, OSError):
                return -1
        except (ValueError, OSError):
            return -1
        return fd

    def _unregister(self, fd: int) -> None:
        if fd >= 0:
            with _suppress():
                self.poller.unregister(fd)

    def _park(self, conn: Any, ahead: bytes, *, handshaken: bool, read_now: bool) -> None:
        addr = str(conn.client[0]) if isinstance(conn.client, tuple) and conn.client else str(conn.client)
        p = _Pending(conn, addr, time.monotonic() + self.request_timeout, buf=bytearray(ahead), handshaken=handshaken)
        p.fd = self._register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, p))
        if p.fd < 0:
            self.nr_conns -= 1
            conn.close()
            return
        mine = self._by_addr.setdefault(addr, {})
        if len(mine) >= self.per_addr_pending:
            self._evict(addr)
        if len(self._pending) >= self.max_pending:
            self._evict(None)
        self._pending[p] = None
        self._by_addr.setdefault(addr, {})[p] = None
        if read_now:
            self._on_readable(p, None)
        elif p.buf:
            self._check(p)
            self._count(p)

    def _on_readable(self, p: _Pending, _fileobj: Any) -> None:
        sock = p.conn.sock
        try:
            if not p.handshaken:
                sock.do_handshake()
                p.handshaken = True
                if p.writing:
                    p.writing = False
                    self.poller.modify(p.fd, selectors.EVENT_READ, partial(self._on_readable, p))
            limit = MAX_HEAD + MAX_BODY
            while len(p.buf) <= limit:
                chunk = sock.recv(65536)
                if not chunk:
                    self._drop(p)  # the client went away
                    return
                p.buf += chunk
        except ssl.SSLWantWriteError:
            if not p.writing:
                p.writing = True
                self.poller.modify(p.fd, selectors.EVENT_READ | selectors.EVENT_WRITE, partial(self._on_readable, p))
            return
        except _WOULD_BLOCK:
            pass
        except (OSError, ValueError):  # ssl.SSLError is an OSError
            self._drop(p)
            return
        self._check(p)
        self._count(p)
        while self._buffered > MAX_BUFFERED and self._pending:  # slow bodies must not fill the memory
            self.evicted += 1
            self._drop(max(self._pending, key=lambda q: q.counted))

    def _count(self, p: _Pending) -> None:
        if p in self._pending:
            self._buffered += len(p.buf) - p.counted
            p.counted = len(p.buf)

    def _check(self, p: _Pending) -> None:
        if p.need < 0:
            found = scan(p.buf)
            if found.refuse:
                self._answer(p, found.refuse)
                return
            if found.need < 0:
                return
            p.need, p.upgrade = found.need, found.upgrade
            if found.expect_continue:
                with _suppress():
                    p.conn.sock.send(CONTINUE)
        if len(p.buf) >= p.need:
            self._dispatch(p)

    def _dispatch(self, p: _Pending) -> None:
        self._forget(p)
        conn = p.conn
        self._unregister(p.fd)
        conn.upgraded = p.upgrade
        if conn.parser is None:
            conn.initialized = True
            conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
        conn.parser.unreader.unread(bytes(p.buf))
        conn.front_ready = True
        self.enqueue_req(conn)

    def _answer(self, p: _Pending, status: int) -> None:
        msg = refusal(status)
        with _suppress():
            p.conn.sock.send(msg)
        self._forget(p)
        self._unregister(p.fd)
        self.nr_conns -= 1
        self.linger(p.conn.sock)

    def _evict(self, addr: str | None) -> None:
        """Drop the oldest request being read from ``addr`` (None: from the busiest address)."""
        if addr is None:
            if not self._by_addr:
                return
            addr = max(self._by_addr, key=lambda a: len(self._by_addr[a]))
        mine = self._by_addr.get(addr)
        if mine:
            self.evicted += 1
            self._drop(next(iter(mine)))

    def _make_room(self) -> bool:
        """At the connection cap: the oldest idle kept-alive connection goes, else the oldest
        request being read from the busiest address. False if there was neither."""
        if self.keepalived_conns:
            conn = self.keepalived_conns.popleft()
            with _suppress():
                self.poller.unregister(conn.sock)
            self.nr_conns -= 1
            conn.close()
            return True
        if not self._pending:
            return False
        self._evict(None)
        return True

    def _forget(self, p: _Pending) -> None:
        if p in self._pending:
            self._buffered -= p.counted
            p.counted = 0
        self._pending.pop(p, None)
        mine = self._by_addr.get(p.addr)
        if mine is not None:
            mine.pop(p, None)
            if not mine:
                del self._by_addr[p.addr]

    def _drop(self, p: _Pending) -> None:
        self._forget(p)
        self._unregister(p.fd)
        self.nr_conns -= 1
        p.conn.close()


def _close(sock: Any) -> None:
    with _suppress():
        sock.close()


def _suppress() -> contextlib.suppress:
    """What closing, sending on and unregistering a socket may raise, ignored."""
    return contextlib.suppress(OSError, ValueError, KeyError, StopIteration)
