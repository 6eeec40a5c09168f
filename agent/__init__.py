"""The in-process agent: serves a running actor system to observers.

One line in the process that runs the node::

    agent.start(node, bind="127.0.0.1:4711", token=b"...")

or, with no code changes beyond calling :func:`start_from_env`, from
``OBSERVER_AGENT_*`` environment variables. Standard library only. The wire
protocol is in :mod:`agent.protocol` and ``docs/protocol.md``.
"""

from __future__ import annotations

import os
import secrets
import ssl
from typing import TYPE_CHECKING, Any

from . import client, protocol
from ._redact import RedactionPolicy, Redactor

if TYPE_CHECKING:
    import actors

    from ._agent import AGENT_VERSION, Agent


def __getattr__(name: str) -> Any:
    # the agent proper (and with it the actor runtime) loads on first use, so
    # that observers importing agent.client/agent.protocol do not load actors
    if name in ("Agent", "AGENT_VERSION"):
        from . import _agent

        return getattr(_agent, name)
    raise AttributeError(f"module 'agent' has no attribute {name!r}")


__all__ = [
    "AGENT_VERSION",
    "Agent",
    "RedactionPolicy",
    "Redactor",
    "client",
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


def _tls(cert: str | None, key: str | None, client_ca: str | None) -> ssl.SSLContext | None:
    if not cert:
        if key or client_ca:
            raise ValueError("TLS options given without a certificate (tls_cert)")
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(client_ca)
    return ctx


def _bytes(token: str | bytes | None) -> bytes | None:
    if token is None:
        return None
    return token.encode() if isinstance(token, str) else token


def start(
    node: actors.Node,
    bind: str = "127.0.0.1:4711",
    *,
    token: str | bytes | None = None,
    read_token: str | bytes | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    tls_client_ca: str | None = None,
    **options: object,
) -> Agent:
    """Start an agent for ``node`` in a thread of its own and return it once listening.

    ``token`` grants the operator role (every command), ``read_token`` the
    read-only role. Without a token one is generated (``agent.token``).
    ``tls_cert``/``tls_key`` turn on TLS; ``tls_client_ca`` also requires
    client certificates signed by that CA (mutual TLS). Other options are
    :class:`Agent`'s keyword arguments (``sample_hz``, ``event_limit``, ...).
    Call from the node's loop thread or any other thread once the node's
    loop is bound (inside ``async with Node()`` or after ``start_in_thread``).
    """
    from ._agent import Agent

    host, port = _parse_bind(bind)
    tok = _bytes(token) or make_token().encode()
    agent = Agent(
        node,
        host=host,
        port=port,
        token=tok,
        read_token=_bytes(read_token),
        ssl_context=_tls(tls_cert, tls_key, tls_client_ca),
        **options,  # type: ignore[arg-type]
    )
    return agent.start()


def _env_secret(name: str) -> str | None:
    path = os.environ.get(f"{name}_FILE")
    if path:
        with open(path, encoding="utf-8") as f:
            return f.read().strip() or None
    return os.environ.get(name) or None


def start_from_env(node: actors.Node) -> Agent | None:
    """Start an agent configured by environment variables; None if
    ``OBSERVER_AGENT_BIND`` is unset.

    ``OBSERVER_AGENT_BIND`` (HOST:PORT), ``OBSERVER_AGENT_TOKEN`` or
    ``OBSERVER_AGENT_TOKEN_FILE`` (operator), ``OBSERVER_AGENT_READ_TOKEN`` or
    ``OBSERVER_AGENT_READ_TOKEN_FILE`` (read-only), ``OBSERVER_AGENT_TLS_CERT``,
    ``OBSERVER_AGENT_TLS_KEY``, ``OBSERVER_AGENT_TLS_CLIENT_CA``,
    ``OBSERVER_AGENT_SAMPLE_HZ``.
    """
    bind = os.environ.get("OBSERVER_AGENT_BIND")
    if not bind:
        return None
    token = _env_secret("OBSERVER_AGENT_TOKEN")
    if not token:
        raise ValueError("OBSERVER_AGENT_BIND is set but neither OBSERVER_AGENT_TOKEN nor _TOKEN_FILE is")
    opts: dict[str, object] = {}
    if os.environ.get("OBSERVER_AGENT_SAMPLE_HZ"):
        opts["sample_hz"] = float(os.environ["OBSERVER_AGENT_SAMPLE_HZ"])
    return start(
        node,
        bind,
        token=token,
        read_token=_env_secret("OBSERVER_AGENT_READ_TOKEN"),
        tls_cert=os.environ.get("OBSERVER_AGENT_TLS_CERT"),
        tls_key=os.environ.get("OBSERVER_AGENT_TLS_KEY"),
        tls_client_ca=os.environ.get("OBSERVER_AGENT_TLS_CLIENT_CA"),
        **opts,
    )
