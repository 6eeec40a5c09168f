"""The in-process agent: serves a running actor system, or a plain asyncio
event loop, to observers.

One line in the process that runs the node (or, inside a coroutine, the loop)::

    agent.start(node, bind="127.0.0.1:4711", token=b"...")
    agent.start(None, bind="127.0.0.1:4711", token=b"...")   # the running asyncio loop

or, with no code changes beyond calling :func:`start_from_env`, from
``OBSERVER_AGENT_*`` environment variables. Standard library only. The wire
protocol is in :mod:`agent.protocol` and ``docs/protocol.md``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import ssl
from typing import TYPE_CHECKING

from . import client, protocol
from ._agent import AGENT_VERSION, Agent
from ._dial import Dialer, dial_ssl_context
from ._env import refuse_renamed_env
from ._redact import Redactor
from ._scrub import RedactionPolicy

if TYPE_CHECKING:
    import actors

    from ._source import Source

    Target = actors.Node | asyncio.AbstractEventLoop | Source


__all__ = [
    "AGENT_VERSION",
    "Agent",
    "RedactionPolicy",
    "Redactor",
    "client",
    "dial",
    "make_token",
    "protocol",
    "start",
    "start_from_env",
]


def make_token() -> str:
    """A fresh random token (256 bits, URL-safe text)."""
    return secrets.token_urlsafe(32)


def _parse_bind(bind: str) -> tuple[str, int]:
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"bind must be HOST:PORT, not {bind!r}")
    return (host.strip("[]") or "127.0.0.1"), int(port)


def _tls(cert: str | None, key: str | None, ca: str | None) -> ssl.SSLContext | None:
    if not cert:
        if key or ca:
            raise ValueError("TLS options given without a certificate (tls_cert)")
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(ca)
    return ctx


def _bytes(token: str | bytes | None) -> bytes | None:
    if token is None:
        return None
    return token.encode() if isinstance(token, str) else token


def _target(target: Target | None) -> Target:
    if target is not None:
        return target
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        raise ValueError(
            "agent.start(None) observes the running asyncio loop: call it from a coroutine, "
            "or pass an actors.Node or an event loop"
        ) from None


def start(
    node: Target | None = None,
    bind: str = "127.0.0.1:4711",
    *,
    token: str | bytes | None = None,
    read_token: str | bytes | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    tls_ca: str | None = None,
    **options: object,
) -> Agent:
    """Start an agent for ``node`` in a thread of its own and return it once listening.

    ``node`` is an :class:`actors.Node`, an asyncio event loop, or None: the
    loop running the caller (see ``docs/asyncio.md``). The handshake tells
    observers which (``node_kind``: ``actors`` or ``asyncio``), and an
    asyncio node offers only the commands it supports (``cancel``, no
    ``suspend``/``send``/``trace``).

    ``token`` grants the operator role (every command), ``read_token`` the
    read-only role. Without a token one is generated (``agent.token``).
    ``tls_cert``/``tls_key`` turn on TLS; ``tls_ca`` also requires
    client certificates signed by that CA (mutual TLS). Other options are
    :class:`Agent`'s keyword arguments (``sample_hz``, ``event_limit``, ...).
    Call from the node's loop thread or any other thread once the node's
    loop is bound (inside ``async with Node()`` or after ``start_in_thread``).

    ``node`` may also be a source (``agent/_source.py``): ``MixedSource(node)``
    (:mod:`agent.mixed`) for an actors node running inside an asyncio
    application, whose other tasks are then shown too (``docs/asyncio.md``,
    "Mixed programs").
    """

    host, port = _parse_bind(bind)
    target = _target(node)
    tok = _bytes(token) or make_token().encode()
    agent = Agent(
        target,
        host=host,
        port=port,
        token=tok,
        read_token=_bytes(read_token),
        ssl_context=_tls(tls_cert, tls_key, tls_ca),
        **options,  # type: ignore[arg-type]
    )
    return agent.start()


def dial(
    agent: Agent,
    address: str,
    *,
    name: str,
    tls: bool = False,
    tls_ca: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    server_hostname: str | None = None,
    **options: float,
) -> Dialer:
    """Make ``agent`` dial out to the observer listening at ``address``
    (``observer serve --listen-agents``), as node ``name``, and keep dialling
    (jittered backoff) while the agent runs. ``tls``/``tls_ca`` verify the
    observer's certificate (against ``tls_ca``, else the system store);
    ``tls_cert``/``tls_key`` present a client certificate (mutual TLS).
    Authentication is the same challenge-response as when the observer attaches."""
    host, port = _parse_bind(address)
    ctx = dial_ssl_context(tls_ca, tls_cert, tls_key) if (tls or tls_ca or tls_cert) else None
    return Dialer(agent, host, port, name=name, ssl_context=ctx, server_hostname=server_hostname, **options).start()


def _env_secret(name: str) -> str | None:
    path = os.environ.get(f"{name}_FILE")
    if path:
        with open(path, encoding="utf-8") as f:
            return f.read().strip() or None
    return os.environ.get(name) or None


def start_from_env(node: Target | None = None, *, bind: str | None = None) -> Agent | None:
    """Start an agent configured by environment variables; None if
    ``OBSERVER_AGENT_BIND`` is unset. ``node`` as for :func:`start` (an
    actors node, an event loop, a source such as ``MixedSource(node)``, or
    None: the running loop).

    ``OBSERVER_AGENT_BIND`` (HOST:PORT), ``OBSERVER_AGENT_TOKEN`` or
    ``OBSERVER_AGENT_TOKEN_FILE`` (operator), ``OBSERVER_AGENT_READ_TOKEN`` or
    ``OBSERVER_AGENT_READ_TOKEN_FILE`` (read-only), ``OBSERVER_AGENT_TLS_CERT``,
    ``OBSERVER_AGENT_TLS_KEY``, ``OBSERVER_AGENT_TLS_CA``,
    ``OBSERVER_AGENT_SAMPLE_HZ``.

    Dial-out (see :func:`dial`): ``OBSERVER_DIAL`` (HOST:PORT of the
    observer's agent listener; the agent then listens on loopback only unless
    ``OBSERVER_AGENT_BIND`` says otherwise), ``OBSERVER_DIAL_NAME`` (default:
    the host name), ``OBSERVER_DIAL_TLS`` (1: TLS, verified against the system
    store), ``OBSERVER_DIAL_TLS_CA``, ``OBSERVER_DIAL_TLS_CERT``,
    ``OBSERVER_DIAL_TLS_KEY``, ``OBSERVER_DIAL_SERVER_HOSTNAME``.
    A variable renamed in 0.2.0 is refused with its new name (:mod:`._env`).
    ``bind``, if given, replaces ``OBSERVER_AGENT_BIND`` (the launcher keeps
    its agent's address when it restarts it: ``agent/_bootstrap.py``).
    """
    refuse_renamed_env()
    dial_to = os.environ.get("OBSERVER_DIAL")
    bind = bind or os.environ.get("OBSERVER_AGENT_BIND") or ("127.0.0.1:0" if dial_to else None)
    if not bind:
        return None
    token = _env_secret("OBSERVER_AGENT_TOKEN")
    if not token:
        raise ValueError("OBSERVER_AGENT_BIND is set but neither OBSERVER_AGENT_TOKEN nor _TOKEN_FILE is")
    opts: dict[str, object] = {}
    if os.environ.get("OBSERVER_AGENT_SAMPLE_HZ"):
        opts["sample_hz"] = float(os.environ["OBSERVER_AGENT_SAMPLE_HZ"])
    ag = start(
        node,
        bind,
        token=token,
        read_token=_env_secret("OBSERVER_AGENT_READ_TOKEN"),
        tls_cert=os.environ.get("OBSERVER_AGENT_TLS_CERT"),
        tls_key=os.environ.get("OBSERVER_AGENT_TLS_KEY"),
        tls_ca=os.environ.get("OBSERVER_AGENT_TLS_CA"),
        **opts,
    )
    if dial_to:
        try:
            dial(
                ag,
                dial_to,
                name=os.environ.get("OBSERVER_DIAL_NAME") or socket.gethostname(),
                tls=os.environ.get("OBSERVER_DIAL_TLS", "") in ("1", "true", "yes"),
                tls_ca=os.environ.get("OBSERVER_DIAL_TLS_CA") or None,
                tls_cert=os.environ.get("OBSERVER_DIAL_TLS_CERT") or None,
                tls_key=os.environ.get("OBSERVER_DIAL_TLS_KEY") or None,
                server_hostname=os.environ.get("OBSERVER_DIAL_SERVER_HOSTNAME") or None,
            )
        except BaseException:
            ag.stop()
            raise
    return ag
