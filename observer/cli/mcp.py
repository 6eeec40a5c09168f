"""``observer mcp``: the observer's model and history as an MCP server (docs/mcp.md).

    observer mcp --attach [NAME=]HOST:PORT ... [--node-token-file F] [--db PATH]
                 [--login-token-file F] [--allow-destructive-actions]
                 [--transport stdio|http] [--host H] [--port N]

Attaches to the agents itself (its own attach manager and history store, as
``observer serve`` does; ``--db`` may name the same history), then serves
the tools of :mod:`observer.mcp` over stdio (the default: stdout carries the
protocol, nothing else is printed there) or streamable HTTP at ``/mcp``.

Who may call: the login tokens of ``--login-token-file`` /
``OBSERVER_LOGIN_TOKEN(_FILE)`` with their grants, as for the web app. Over
HTTP each request sends ``Authorization: Bearer TOKEN``; over stdio the
client gives its token in ``OBSERVER_MCP_TOKEN`` (or ``OBSERVER_MCP_TOKEN_FILE``).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from ..app import AttachSpec, ObserverConfig, ObserverState
from ..attach import parse_address
from ..mcp import server as mcp_server
from ..permissions import Grant, match, parse_login_tokens
from ..security import SecurityPolicy, is_loopback
from ..serve import bind_socket
from . import helpers as h

__all__ = ["mcp"]


def _grants(path: str | None) -> tuple[Grant, ...]:
    path = path or os.environ.get("OBSERVER_LOGIN_TOKEN_FILE") or None
    if path:
        try:
            return parse_login_tokens(h.read_secret(path))
        except ValueError as exc:
            raise click.UsageError(f"{path}: {exc}") from None
    token = os.environ.get("OBSERVER_LOGIN_TOKEN")
    if not token:
        raise click.UsageError("observer mcp needs login tokens: --login-token-file or OBSERVER_LOGIN_TOKEN(_FILE)")
    return (Grant(token, name="operator"),)


def _stdio_grant(grants: tuple[Grant, ...]) -> Grant:
    path = os.environ.get("OBSERVER_MCP_TOKEN_FILE")
    given = h.read_secret(path) if path else os.environ.get("OBSERVER_MCP_TOKEN")
    if not given:
        raise click.UsageError("over stdio the client's token comes from OBSERVER_MCP_TOKEN(_FILE)")
    grant = match(grants, given)
    if grant is None:
        raise click.UsageError("OBSERVER_MCP_TOKEN is not one of the login tokens")
    return grant


@click.command("mcp")
@click.option("--attach", "attach", multiple=True, required=True, help="[NAME=]HOST:PORT of an agent (repeatable)")
@click.option("--node-token-file", type=h.FILE, default=None, help="node token(s), or OBSERVER_NODE_TOKEN(_FILE)")
@click.option("--db", type=click.Path(dir_okay=False), default=None, help="SQLite file or postgresql://...")
@click.option("--login-token-file", type=h.FILE, default=None, help="login token(s), or OBSERVER_LOGIN_TOKEN(_FILE)")
@click.option("--allow-destructive-actions", is_flag=True, help="list kill/suspend/resume/send (grant + audit)")
@click.option("--transport", type=click.Choice(["stdio", "http"]), default="stdio", show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="HTTP: address to bind (loopback only)")
@click.option("--port", type=click.IntRange(0, 65535), default=8766, show_default=True, help="HTTP: 0 for any")
def mcp(
    attach: tuple[str, ...],
    node_token_file: str | None,
    db: str | None,
    login_token_file: str | None,
    allow_destructive_actions: bool,
    transport: str,
    host: str,
    port: int,
) -> None:
    """Serve the observer's model and history to MCP clients (stdio or streamable HTTP)."""
    if not mcp_server.available():
        raise click.ClickException("observer mcp needs the mcp package: pip install 'supervision-observer[mcp]'")
    grants = _grants(login_token_file)
    tokens = h.read_node_tokens(node_token_file)
    specs = []
    for item in attach:
        name, _, address = item.rpartition("=")
        try:
            parse_address(address)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--attach") from None
        name = name or address
        tok = tokens.get(name) or tokens.get(address) or tokens.get("*")
        if not tok:
            raise h.no_node_token(address)
        specs.append(AttachSpec(name, address, tok))
    stdio_grant = _stdio_grant(grants) if transport == "stdio" else None
    if transport == "http" and not is_loopback(host):
        raise click.UsageError("observer mcp serves plain HTTP: bind it to loopback (put TLS in front to expose it)")
    sock = None
    if transport == "http":
        try:
            sock = bind_socket(host, port)
        except OSError as exc:
            raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        port = int(sock.getsockname()[1])
    config = ObserverConfig(
        host=host, port=port, login_token=grants[0].token, grants=grants, db=db,
        allow_destructive_actions=allow_destructive_actions, attach=tuple(specs),
    )  # fmt: skip
    state = ObserverState(config, SecurityPolicy.for_bind(grants[0].token, host, port, grants=grants))
    try:
        state.attach_all()
        if sock is None:
            mcp_server.build(state, grants=grants, stdio_grant=stdio_grant).run("stdio")
        else:
            _serve_http(state, grants, sock, host, port)
    finally:
        state.close()


def _serve_http(state: ObserverState, grants: tuple[Grant, ...], sock: Any, host: str, port: int) -> None:
    url = f"http://{host}:{port}"
    server = mcp_server.build(state, grants=grants, http_url=url)
    click.echo(f"observer: mcp {url}/mcp (Authorization: Bearer <login token>)")
    sys.stdout.flush()
    mcp_server.serve_http(server, sock, host, port)
