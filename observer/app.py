"""The Flask + Flask-SocketIO app factory.

``create_app(config) -> (app, socketio)`` wires the pieces: the security
hooks (:mod:`observer.security`), the Blueprints and the one error handler
(:mod:`observer.views`), the chaos service (:mod:`observer.chaos.web`) and
the ``/live`` namespace (:mod:`observer.live`), around one
:class:`ObserverState` holding the attachments and the history store. The
live hub follows the models' changes, the store's commits (audit rows, crash
reports) and the chaos engines' progress, and pushes them.

Threading rules
    Call :func:`create_app` in the process that serves (with gunicorn: in the
    worker, after the fork), because it may start the attach loop thread, the
    store's writer thread and the live pushing task. ``ObserverState`` is
    shared by every request thread: it only hands out the thread-safe
    model, attachment and store objects. :meth:`ObserverState.close` stops
    what the state owns (not an injected manager or store).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Flask
from flask_socketio import SocketIO

from agent import protocol as P

from . import metrics, views
from .attach import AttachManager, Attachment
from .chaos.web import ChaosService
from .dialin import DialInListener
from .gate import SocketGate
from .live import NAMESPACE, LiveHub, LiveNamespace
from .model import NodeModel
from .refusals import RefusalLog
from .security import SecurityPolicy, install
from .sessions import IDLE, MAX_AGE, SessionStore
from .store import HistoryStore
from .trace import install as install_traces

__all__ = ["ASYNC_MODES", "WEB_DIR", "AttachSpec", "ObserverConfig", "ObserverState", "create_app"]

log = logging.getLogger("observer.app")


def _web_dir() -> Path:
    here = Path(__file__).resolve().parent
    installed = here / "web"  # the wheel: package ``observer.web``, mapped onto web/ by pyproject.toml
    return installed if (installed / "templates").is_dir() else here.parent / "web"


WEB_DIR = _web_dir()
"""``web/`` (templates, static files, node_modules): inside the installed
package, or the repository's top-level directory when run from a checkout."""
ASYNC_MODES = ("threading", "gevent", "eventlet")


@dataclass(frozen=True, slots=True)
class AttachSpec:
    """One agent to attach to."""

    name: str
    """The node's name in URLs and rooms (``demo`` for the demo)."""
    address: str
    """``host:port`` of the agent."""
    token: str = field(repr=False)
    """The agent's token (operator or read-only)."""
    ssl_context: Any = None
    """An ``ssl.SSLContext`` for a TLS link (:func:`observer.cluster.agent_ssl_context`)."""
    server_hostname: str | None = None
    """The name the agent's certificate must carry (default: the address's host)."""


@dataclass
class ObserverConfig:
    """Everything :func:`create_app` needs. Tokens come from files or the
    environment, never from the command line (the CLI's job)."""

    host: str = "127.0.0.1"
    port: int = 8765
    login_token: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    secret_key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    allow_destructive_actions: bool = False
    allowed_origins: tuple[str, ...] = ()
    async_mode: str = "threading"
    db: str | None = None
    """The history: a SQLite file, or ``postgresql://...`` (:mod:`observer.db.postgresql`);
    None: a temporary SQLite file removed on close."""
    attach: tuple[AttachSpec, ...] = ()
    tls: bool = False
    grants: tuple[Any, ...] = field(default=(), repr=False)
    """Login tokens with roles and actions (:mod:`observer.permissions`); empty: ``login_token``."""
    agent_tokens: dict[str, str] = field(default_factory=dict, repr=False)
    """Agent tokens by node name, address or ``*`` (for nodes added at run time)."""
    agent_tls: Any = None
    """:class:`observer.cluster.TlsSettings` for nodes added at run time with ``tls``."""
    listen_agents: str | None = None
    """``host:port`` to accept agents that dial in (:mod:`observer.dialin`)."""
    listen_agents_ssl: Any = None
    """Server ``ssl.SSLContext`` for that listener (:func:`observer.dialin.server_ssl_context`)."""
    tls_cert: str | None = None
    """HTTPS certificate (``tls`` is then True); served by gunicorn."""
    tls_key: str | None = None
    message_queue: str | None = None
    """``redis://...``: Flask-SocketIO's message queue, so several servers share the fan-out."""
    live_publisher: bool = True
    """Push live batches; with a shared message queue one server publishes for all."""
    batch_interval: float = 0.25
    session_idle: float = IDLE
    """Seconds of inactivity after which a login session ends."""
    session_max_age: float = MAX_AGE
    """Seconds after login after which a session ends, however active."""
    """Seconds between two ``batch`` messages to one room."""
    manager: AttachManager | None = None
    """An attach manager to use instead of creating one (not closed by us)."""
    store: Any = None
    """A :class:`observer.store.HistoryStore` to use instead of opening ``db`` (not closed by us)."""
    metrics_token: str | None = field(default=None, repr=False)
    """Serve ``/metrics`` to scrapers that send ``Authorization: Bearer`` this token (:mod:`observer.metrics`)."""
    metrics_listen: str | None = None
    """``host:port`` of a separate HTTP server for the metrics (:mod:`observer.metrics`)."""

    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"


class ObserverState:
    """The live state behind the app: attachments, models, store, the live hub."""

    def __init__(self, config: ObserverConfig, policy: SecurityPolicy) -> None:
        self.config = config
        self.policy = policy
        self.allow_destructive = config.allow_destructive_actions
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self._owns_store = config.store is None
        if config.store is not None:
            self.store = config.store
        else:
            path = config.db
            if path is None:
                self._tmpdir = tempfile.TemporaryDirectory(prefix="observer-")
                path = os.path.join(self._tmpdir.name, "history.sqlite3")
            self.store = HistoryStore(path)
        self._owns_manager = config.manager is None
        self.manager = (
            config.manager if config.manager is not None else AttachManager(self.store, change_interval=0.005)
        )
        self.refusals = RefusalLog(self.store).start()
        """Refusals, coalesced into the audit log (:mod:`observer.refusals`)."""
        self.sessions = SessionStore(self.store.db, idle=config.session_idle, max_age=config.session_max_age).watch()
        """Server-side login sessions (:mod:`observer.sessions`)."""
        self.hub: LiveHub | None = None
        self.dialin: Any = None
        """The :class:`observer.dialin.DialInListener`, with ``listen_agents``."""
        self.metrics_server: Any = None
        """The :class:`observer.metrics.MetricsServer`, with ``metrics_listen``."""
        self.traces: Any = None
        """The :class:`observer.trace.TraceService`."""

    def attach_all(self) -> None:
        """Attach to the configured agents: operator role only when destructive
        actions are allowed (least privilege otherwise)."""
        role = P.ROLE_OPERATOR if self.allow_destructive else P.ROLE_READ
        for spec in self.config.attach:
            self.manager.add(
                spec.address,
                spec.token,
                role,
                name=spec.name,
                ssl_context=spec.ssl_context,
                server_hostname=spec.server_hostname,
            )

    def nodes(self) -> list[str]:
        return [a.name for a in self.manager.list()]

    def attachment(self, node: str) -> Attachment | None:
        return self.manager.get(node)

    def model(self, node: str) -> NodeModel | None:
        att = self.manager.get(node)
        return att.model if att is not None else None

    def stats(self, node: str) -> dict[str, Any] | None:
        model = self.model(node)
        return model.summary() if model is not None else None

    def close(self) -> None:
        """Stop the live task and what this state owns. Idempotent."""
        if self.hub is not None:
            self.hub.stop()
        if self.dialin is not None:
            self.dialin.stop()
            self.dialin = None
        self.refusals.close()
        self.sessions.close()
        if self.metrics_server is not None:
            self.metrics_server.close()
            self.metrics_server = None
        if self._owns_manager:
            with contextlib.suppress(Exception):
                self.manager.close()
        if self._owns_store:
            with contextlib.suppress(Exception):
                self.store.close()
        if self._tmpdir is not None:
            with contextlib.suppress(Exception):
                self._tmpdir.cleanup()
            self._tmpdir = None


def create_app(config: ObserverConfig) -> tuple[Flask, SocketIO]:
    """Build the app and its SocketIO; starts the attachments and the live task."""
    if config.async_mode not in ASYNC_MODES:
        raise ValueError(f"async_mode must be one of {ASYNC_MODES}")
    policy = SecurityPolicy.for_bind(
        config.login_token,
        config.host,
        config.port,
        tls=config.tls,
        extra_origins=config.allowed_origins,
        grants=tuple(config.grants),
    )
    app = Flask(
        "observer",
        root_path=str(Path(__file__).resolve().parent),
        template_folder=str(WEB_DIR / "templates"),
        static_folder=str(WEB_DIR / "static"),
        static_url_path="/static",
    )
    app.config.update(
        SECRET_KEY=config.secret_key,
        SESSION_COOKIE_NAME=f"observer_session_{config.port}",  # cookies are not port-scoped
        JSON_SORT_KEYS=False,
        MAX_CONTENT_LENGTH=1 << 20,
        DEBUG=False,
        TESTING=False,
        PROPAGATE_EXCEPTIONS=False,
    )
    app.debug = False
    install(app, policy)
    state = ObserverState(config, policy)
    app.extensions["observer"] = state
    views.register(app)

    socketio = SocketIO()
    socketio.init_app(
        app,
        async_mode=config.async_mode,
        cors_allowed_origins=sorted(policy.origins),
        manage_session=True,
        max_http_buffer_size=64 * 1024,
        message_queue=config.message_queue,
        logger=False,
        engineio_logger=False,
        namespaces=[NAMESPACE],  # nothing else, not even the default "/"
    )
    state.metrics_server = metrics.install(app, state, token=config.metrics_token, listen=config.metrics_listen)
    app.wsgi_app = SocketGate(app.wsgi_app, app)  # type: ignore[method-assign]
    hub = LiveHub(socketio, state.stats, interval=config.batch_interval)
    hub.shared = config.message_queue is not None
    state.hub = hub
    app.extensions["chaos"] = ChaosService(state, publish=hub.publish)
    hub.publishes_nodes = config.live_publisher
    if config.live_publisher:
        state.manager.on_change(hub.on_change)
    state.store.on_commit(hub.on_commit)
    state.traces = install_traces(state.manager, state.store, hub.publish)
    socketio.on_namespace(LiveNamespace(hub, state))
    hub.start()
    state.attach_all()
    if config.listen_agents:
        role = P.ROLE_OPERATOR if state.allow_destructive else P.ROLE_READ
        state.dialin = DialInListener(
            state.manager,
            config.listen_agents,
            config.agent_tokens,
            role=role,
            ssl_context=config.listen_agents_ssl,
            store=state.store,
        )
        state.dialin.refusals = state.refusals
        state.dialin.start()
    return app, socketio
