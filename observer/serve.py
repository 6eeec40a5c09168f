"""Serving the app with a production server, started from our CLI.

* threading mode (default): gunicorn's ``gthread`` worker with our selector
  front (:class:`observer.front.FrontedThreadWorker`: a thread only gets a
  request that has fully arrived, so slow clients hold no thread), one worker
  with many threads (Flask-SocketIO needs a single worker without a message
  queue; simple-websocket carries WebSocket on the worker's threads), started
  programmatically through :class:`ObserverGunicorn`. The app is created in
  the worker, after the fork, by :meth:`ObserverGunicorn.load`, so the attach
  loop thread and the store's writer live in the process that serves.
* eventlet mode (optional ``[eventlet]`` extra): ``eventlet.wsgi.server``,
  eventlet's own production WSGI server, in this process. gunicorn dropped
  its eventlet worker (gunicorn >= 24 has none); if it is present in the
  installed gunicorn it is used instead.

Never Werkzeug's development server, never ``allow_unsafe_werkzeug``.

The listening socket is bound by the caller first (:func:`bind_socket`), so
the CLI knows the real port (``--port 0``) before printing the URL, and
handed to gunicorn as ``fd://N``.

Threading rules
    :func:`serve` blocks the calling (main) thread until the server stops
    (SIGINT/SIGTERM); ``on_exit`` runs in the serving process as it stops.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import resource
import socket
from collections.abc import Callable
from typing import Any

from flask import Flask
from flask_socketio import SocketIO
from gunicorn.app.base import BaseApplication

from .front import FrontedThreadWorker
from .gate import SocketGate

__all__ = ["ObserverGunicorn", "bind_socket", "eventlet_available", "gunicorn_has_eventlet", "serve"]

log = logging.getLogger("observer.serve")

Factory = Callable[[], tuple[Flask, SocketIO]]

DEFAULT_THREADS = 320
"""gthread worker threads: a WebSocket holds one for its life (``bench flood``: 300 live browsers)."""
RESERVED_THREADS = 16
"""With the gthread worker: threads never given to a WebSocket (pages and the API keep them)."""
GEVENT_CONNECTIONS = 4000
"""Simultaneous connections at most (greenlets with gevent; with gthread, parked in its selector)."""


def eventlet_available() -> bool:
    return importlib.util.find_spec("eventlet") is not None


def gunicorn_has_eventlet() -> bool:
    from gunicorn.workers import SUPPORTED_WORKERS

    return "eventlet" in SUPPORTED_WORKERS


def bind_socket(host: str, port: int, *, backlog: int = 1024) -> socket.socket:
    """A listening TCP socket on ``host:port`` (0: any free port), inheritable. A long
    backlog: under a connection flood the kernel keeps a user's connection waiting for
    ``accept`` rather than dropping it (and the client retrying a second later)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # accepted sockets inherit it (Linux): no Nagle + delayed-ACK stall (~40 ms) on
    # responses written in several pieces over a kept-alive connection
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


class ObserverGunicorn(BaseApplication):
    """gunicorn, configured in code; ``load()`` builds the app in the worker."""

    def __init__(self, factory: Factory, options: dict[str, Any], on_exit: Callable[[], None] | None = None) -> None:
        self._factory = factory
        self._options = options
        self._on_exit = on_exit
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)
        if self._on_exit is not None:
            on_exit = self._on_exit

            def worker_exit(server: Any, worker: Any) -> None:
                on_exit()

            self.cfg.set("worker_exit", worker_exit)

    def load(self) -> Any:
        app, _socketio = self._factory()
        gate = app.wsgi_app
        if isinstance(gate, SocketGate) and self._options.get("worker_class") is FrontedThreadWorker:
            # a thread per WebSocket: keep RESERVED_THREADS for pages and the API
            gate.max_live = max(1, int(self._options["threads"]) - RESERVED_THREADS)
        return app  # init_app wrapped app.wsgi_app with the Engine.IO middleware (and our gate)


def serve(
    factory: Factory,
    sock: socket.socket,
    *,
    async_mode: str = "threading",
    threads: int = DEFAULT_THREADS,
    on_exit: Callable[[], None] | None = None,
    log_level: str = "warning",
    tls_cert: str | None = None,
    tls_key: str | None = None,
) -> None:
    """Serve the app built by ``factory`` on the listening ``sock`` until stopped
    (HTTPS with ``tls_cert``/``tls_key``, threading mode only)."""
    if async_mode == "eventlet" and not gunicorn_has_eventlet():
        _serve_eventlet(factory, sock, on_exit)
        return
    if async_mode == "gevent" and importlib.util.find_spec("gevent") is None:
        raise RuntimeError("--async-mode gevent needs gevent: pip install 'observer[gevent]'")
    worker: Any = FrontedThreadWorker
    if async_mode == "gevent":
        worker = _gevent_worker()
    elif async_mode == "eventlet":
        worker = "eventlet"
    options = {
        "bind": [f"fd://{sock.fileno()}"],
        "workers": 1,
        "worker_class": worker,
        "threads": threads,
        "worker_connections": _connections(),
        "timeout": 0 if async_mode == "threading" else 30,
        "graceful_timeout": 5,
        "keepalive": 5,
        "loglevel": log_level,
        "accesslog": None,
        "errorlog": "-",
        "preload_app": False,
        "proc_name": "observer",
    }
    if tls_cert:
        options.update({"certfile": tls_cert, "keyfile": tls_key})
    ObserverGunicorn(factory, options, on_exit).run()


def _connections() -> int:
    """:data:`GEVENT_CONNECTIONS`, within half the open-files limit (raised to its hard limit
    first): a flood fills the connection cap, never the process's descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return GEVENT_CONNECTIONS
    return max(64, min(GEVENT_CONNECTIONS, soft // 2))


def _gevent_worker() -> Any:
    """gunicorn's gevent worker, patching everything but threads: the attach loop
    (asyncio) and the store's writer stay real threads; only connections are greenlets."""
    if importlib.util.find_spec("gevent") is None:
        return None
    from gevent import monkey
    from gevent import socket as green_socket
    from gunicorn.workers.ggevent import GeventWorker

    class ObserverGeventWorker(GeventWorker):
        def patch(self) -> None:
            monkey.patch_all(thread=False, queue=False, select=False, Event=False)
            sockets: list[Any] = []
            listeners: list[Any] = getattr(self, "sockets", [])
            for s in listeners:
                sockets.append(green_socket.socket(s.FAMILY, socket.SOCK_STREAM, fileno=s.sock.detach()))
            self.sockets = sockets

    return ObserverGeventWorker


def _serve_eventlet(factory: Factory, sock: socket.socket, on_exit: Callable[[], None] | None) -> None:
    if not eventlet_available():
        raise RuntimeError("--async-mode eventlet needs eventlet: pip install 'observer[eventlet]'")
    import eventlet.wsgi
    from eventlet.green import socket as green_socket

    listener = green_socket.socket(fileno=sock.detach())
    app, _socketio = factory()
    try:
        eventlet.wsgi.server(listener, app, log_output=False, max_size=1024)
    finally:
        if on_exit is not None:
            on_exit()
