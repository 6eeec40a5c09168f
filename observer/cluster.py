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

Run time (operator role only, CSRF-checked like every state change, audited
before they act): ``POST /api/nodes`` ``{"name", "address", "token"?, "tls"?}``
attaches a node (the token from the body, else from the server's agent
tokens by name, address or ``*``); ``DELETE /api/nodes/<name>`` detaches one.
``GET /api/cluster`` is every node's health in one list.

Threading rules
    Request handlers only; they call the attach manager's blocking methods
    (allowed on request threads, never on the attach loop).
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

from flask import Flask, current_app, request

from agent import protocol as P

from .attach import parse_address
from .permissions import is_operator, refuse, who

__all__ = ["ClusterConfig", "agent_ssl_context", "cluster_health", "load_config", "register"]

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


def _json_error(status: int, code: str, message: str) -> Any:
    return {"ok": False, "error": code, "message": message}, status


def register(app: Flask) -> None:
    """The cluster endpoints (see the module docstring)."""

    @app.get("/api/cluster")
    def api_cluster() -> Any:
        state = current_app.extensions["observer"]
        nodes = cluster_health(state)
        return {
            "nodes": nodes,
            "totals": {
                "nodes": len(nodes),
                "up": sum(1 for n in nodes if n["status"] == "up"),
                "processes": sum(n["process_count"] or 0 for n in nodes),
                "restart_rate": sum(n["restart_rate"] or 0 for n in nodes),
            },
            "can_manage": is_operator(),
        }

    @app.post("/api/nodes")
    def api_add_node() -> Any:
        state = current_app.extensions["observer"]
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return _json_error(400, "bad_json", "the body must be a JSON object")
        name, address = body.get("name") or body.get("address"), body.get("address")
        target = str(name)[:100] if name else None
        if not is_operator():
            return refuse("add_node", "only operators may add nodes", node=target, args={"address": address})
        if not isinstance(address, str):
            return _json_error(400, "bad_args", "'address' (HOST:PORT) is required")
        try:
            parse_address(address)
        except ValueError as exc:
            return _json_error(400, "bad_args", str(exc))
        if not isinstance(name, str) or not NAME_RE.match(name):
            return _json_error(400, "bad_args", "'name' must be letters, digits and _.:@- (at most 100)")
        if state.attachment(name) is not None:
            return _json_error(409, "exists", f"a node named {name!r} is already attached")
        token = body.get("token")
        if token is not None and (not isinstance(token, str) or not token.strip()):
            return _json_error(400, "bad_args", "'token' must be a non-empty string")
        tokens = state.config.agent_tokens
        token = token or tokens.get(name) or tokens.get(address) or tokens.get("*")
        if not token:
            return _json_error(400, "no_token", f"no agent token for {name}: give 'token' or add it to the token file")
        ctx = None
        if body.get("tls"):
            defaults = state.config.agent_tls or TlsSettings()
            try:
                ctx = agent_ssl_context(defaults)
            except (OSError, ValueError, ssl.SSLError) as exc:
                return _json_error(400, "bad_tls", f"cannot set up TLS: {exc}")
        store = state.store
        aid = store.audit(who(), request.remote_addr, "add_node", address, {"tls": bool(ctx)}, node=name)
        role = P.ROLE_OPERATOR if state.allow_destructive else P.ROLE_READ
        try:
            att = state.manager.add(address, token.strip(), role, name=name, ssl_context=ctx)
        except (ValueError, RuntimeError) as exc:
            store.audit_result(aid, {"error": "failed", "message": str(exc)}, ok=False)
            return _json_error(409, "failed", str(exc))
        store.audit_result(aid, {"added": name}, ok=True)
        return {"ok": True, "node": att.info()}

    @app.delete("/api/nodes/<node>")
    def api_remove_node(node: str) -> Any:
        state = current_app.extensions["observer"]
        if not is_operator():
            return refuse("remove_node", "only operators may remove nodes", node=node)
        if state.attachment(node) is None:
            return _json_error(404, "unknown_node", f"no node {node!r}")
        aid = state.store.audit(who(), request.remote_addr, "remove_node", None, {}, node=node)
        removed = state.manager.remove(node)
        state.store.audit_result(aid, {"removed": removed}, ok=removed)
        return {"ok": removed, "node": node}
