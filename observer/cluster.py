"""Many nodes: the cluster config file, TLS for agent links, and nodes added or
removed at run time.

The config file (``observer serve --config FILE``) is TOML::

    [tls]                         # defaults for nodes with tls = true (optional)
    ca = "ca.pem"                 # verify the agents' certificates with this CA
    cert = "observer.pem"         # our client certificate (mutual TLS, optional)
    key = "observer.key"

    [[nodes]]
    name = "payments-1"           # the node's name in URLs (default: the address)
    address = "10.0.0.5:4711"
    token_file = "/run/secrets/payments-1"   # or token_env = "PAYMENTS_1_TOKEN"
    tls = true                    # or a table: {ca, cert, key, server_hostname}

Relative paths are relative to the file. A ``token`` key is refused: tokens
come from files or the environment only. The TLS triple is spelled ``cert``,
``key``, ``ca`` here as everywhere (``--tls-cert``, ``OBSERVER_AGENT_TLS_CERT``,
``agent.start(tls_cert=...)``); the names before 0.2.0 (``ca_file``,
``cert_file``, ``key_file``) are refused with the new name.

Nodes added and removed at run time, and every node's health in one list
(:func:`cluster_health`), are served by :mod:`observer.views.cluster`.

Threading rules
    Pure functions; :func:`cluster_health` reads the thread-safe state objects.
"""

from __future__ import annotations

import os
import re
import ssl
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .attach import parse_address

__all__ = ["NAME_RE", "ClusterConfig", "TlsSettings", "agent_ssl_context", "cluster_health", "load_config"]

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,99}$")
"""Node names: they go into URLs and Socket.IO rooms."""

TLS_KEYS = ("ca", "cert", "key", "server_hostname")
"""The keys of a ``tls`` table."""

RENAMED_TLS_KEYS = {"ca_file": "ca", "cert_file": "cert", "key_file": "key"}
"""Keys of a ``tls`` table before 0.2.0, and their names now."""


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """Client-side TLS for agent links."""

    ca: str | None = None
    """Verify the agent's certificate against this CA file (None: the system store)."""
    cert: str | None = None
    """Our client certificate (mutual TLS)."""
    key: str | None = None
    """The private key of ``cert``."""
    server_hostname: str | None = None
    """The name the agent's certificate must carry (None: the address's host)."""


@dataclass(frozen=True, slots=True)
class NodeEntry:
    """One ``[[nodes]]`` entry, resolved."""

    name: str
    address: str
    token: str = field(repr=False)
    tls: TlsSettings | None = None


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    nodes: tuple[NodeEntry, ...] = ()
    tls: TlsSettings | None = None
    """The ``[tls]`` defaults (also used for nodes added at run time with ``tls``)."""


def agent_ssl_context(tls: TlsSettings) -> ssl.SSLContext:
    """A client context for an agent link: verify the agent's certificate against
    ``ca`` (the system store without it), present ``cert`` when given."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cert:
        ctx.load_cert_chain(tls.cert, tls.key)
    elif tls.key:
        raise ValueError("a TLS key given without a cert")
    return ctx


def _path(base: Path, value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a path")
    p = Path(value)
    p = p if p.is_absolute() else base / p
    if not p.is_file():
        raise ValueError(f"{what}: no such file {str(p)!r}")
    return str(p)


def _tls(base: Path, raw: Any, where: str) -> TlsSettings:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where} must be a table")
    renamed = sorted(set(raw) & set(RENAMED_TLS_KEYS))
    if renamed:
        new = ", ".join(f"{old} is now {RENAMED_TLS_KEYS[old]}" for old in renamed)
        raise ValueError(f"{where}: renamed key(s) in 0.2.0: {new}")
    unknown = set(raw) - set(TLS_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    hostname = raw.get("server_hostname")
    if hostname is not None and not isinstance(hostname, str):
        raise ValueError(f"{where}.server_hostname must be a string")
    return TlsSettings(
        ca=_path(base, raw.get("ca"), f"{where}.ca"),
        cert=_path(base, raw.get("cert"), f"{where}.cert"),
        key=_path(base, raw.get("key"), f"{where}.key"),
        server_hostname=hostname,
    )


def read_token(base: Path, entry: Mapping[str, Any], where: str) -> str:
    """A node's token: ``token_file`` or ``token_env`` (never inline)."""
    if "token" in entry:
        raise ValueError(f"{where}: tokens are not written in the config; use token_file or token_env")
    if entry.get("token_file"):
        path = _path(base, entry["token_file"], f"{where}.token_file")
        assert path is not None
        text = Path(path).read_text(encoding="utf-8").strip()
        if not text:
            raise ValueError(f"{where}: {path} is empty")
        return text
    if entry.get("token_env"):
        value = os.environ.get(str(entry["token_env"]), "").strip()
        if not value:
            raise ValueError(f"{where}: environment variable {entry['token_env']} is not set")
        return value
    raise ValueError(f"{where}: token_file or token_env is required")


def load_config(path: str | os.PathLike[str]) -> ClusterConfig:
    """Parse a cluster config file; ValueError with a clear message if it is wrong."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{p}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{p}: not valid TOML: {exc}") from None
    base = p.resolve().parent
    unknown = set(data) - {"tls", "nodes"}
    if unknown:
        raise ValueError(f"{p}: unknown section(s) {', '.join(sorted(unknown))}")
    defaults = _tls(base, data["tls"], "[tls]") if "tls" in data else None
    raw_nodes = data.get("nodes", [])
    if not isinstance(raw_nodes, list):
        raise ValueError(f"{p}: nodes must be an array of tables ([[nodes]])")
    nodes: list[NodeEntry] = []
    for i, entry in enumerate(raw_nodes):
        where = f"nodes[{i}]"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where} must be a table")
        extra = set(entry) - {"name", "address", "token_file", "token_env", "tls", "token"}
        if extra:
            raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")
        address = entry.get("address")
        if not isinstance(address, str):
            raise ValueError(f"{where}.address is required (HOST:PORT)")
        parse_address(address)
        name = entry.get("name") or address
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ValueError(f"{where}.name {name!r} is not a valid node name")
        tls_raw = entry.get("tls", False)
        if tls_raw is True:
            tls = defaults or TlsSettings()
        elif tls_raw is False:
            tls = None
        else:
            tls = _tls(base, tls_raw, f"{where}.tls")
        nodes.append(NodeEntry(name, address, read_token(base, entry, where), tls))
    names = [n.name for n in nodes]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"{p}: node name(s) used twice: {', '.join(sorted(dup))}")
    return ClusterConfig(tuple(nodes), defaults)


def cluster_health(state: Any) -> list[dict[str, Any]]:
    """Every node in one list: status, process count, restart rate, crashes, link."""
    out = []
    for att in state.manager.list():
        s = att.model.summary()
        info = att.info()
        out.append(
            {
                "name": att.name,
                "address": info["address"],
                "direction": info.get("direction", "attach"),
                "tls": info["tls"],
                "role": info["role"],
                "status": s["status"],
                "reason": s["reason"] or info["last_error"],
                "down_since": s["down_since"],
                "last_seen": s["last_seen"],
                "process_count": s["process_count"],
                "restart_rate": s["restart_rate"],
                "message_rate": s["message_rate"],
                "restarts": s["restarts"],
                "crashes": s["crashes"],
                "attempts": info["attempts"],
                "connects": info["connects"],
                "os_pid": (s["node"] or {}).get("os_pid"),
                "host": (s["node"] or {}).get("host"),
            }
        )
    return out
