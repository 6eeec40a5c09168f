"""The MCP server: the tools of :mod:`observer.mcp.tools` on the official ``mcp`` SDK.

:func:`build` makes an ``MCPServer`` over an :class:`observer.app.ObserverState`.
Read tools are always there; the destructive ones (``kill``, ``suspend``,
``resume``, ``send``) are listed only when the state allows destructive
actions, and each call checks the caller's grant again.

Authentication, as for the web app: login tokens with grants
(:mod:`observer.permissions`).

* Streamable HTTP: every request carries ``Authorization: Bearer TOKEN``;
  the SDK's bearer middleware asks :class:`GrantVerifier`, and a tool reads
  the grant back from the request's access token.
* stdio: the client that starts ``observer mcp`` gives its token in
  ``OBSERVER_MCP_TOKEN`` (or ``OBSERVER_MCP_TOKEN_FILE``); the process keeps
  that grant for its life (:func:`build` with ``stdio_grant``).

The SDK is an optional dependency: it is imported when a server is built,
so that importing this module (the ``observer`` command does) costs nothing
and works without the ``mcp`` extra (:func:`available`).

Threading rules
    The SDK runs on an anyio event loop in the command's main thread; every
    tool runs its blocking work on a worker thread (``anyio.to_thread``).
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..permissions import Grant, match
from .tools import DESTRUCTIVE_TOOLS, Caller, ToolRefused, Tools

if TYPE_CHECKING:
    from mcp.server.auth.provider import AccessToken
    from mcp.server.mcpserver import MCPServer

__all__ = ["GrantVerifier", "available", "build", "serve_http"]

INSTRUCTIONS = (
    "Read-only access to a live observer of supervision trees (OTP-style actors on asyncio): "
    "its nodes, supervision trees, processes (state redacted by the agent), crash groups and "
    "reports, the event history, and kill previews. Destructive tools, when listed, are audited."
)


def available() -> bool:
    """Whether the ``mcp`` SDK is installed (the ``mcp`` extra)."""
    return importlib.util.find_spec("mcp") is not None


class GrantVerifier:
    """Bearer tokens checked against the login grants (in constant time)."""

    def __init__(self, grants: tuple[Grant, ...]) -> None:
        self.grants = grants

    async def verify_token(self, token: str) -> AccessToken | None:
        from mcp.server.auth.provider import AccessToken

        grant = match(self.grants, token)
        if grant is None:
            return None
        return AccessToken(token=token, client_id=grant.name or "mcp", scopes=[f"role:{grant.role}", *grant.actions])


def _http_caller(grants: tuple[Grant, ...]) -> Caller:
    from mcp.server.auth.middleware.auth_context import get_access_token
    from mcp.server.mcpserver.exceptions import ToolError

    access = get_access_token()
    grant = match(grants, access.token) if access is not None else None
    if grant is None:  # the middleware let no unauthenticated request through: this is a bug, fail closed
        raise ToolError("not_authenticated: no valid bearer token")
    return Caller(grant, "mcp-http")


def _json(value: Any) -> str:
    return json.dumps(value, default=str, separators=(",", ":"))


def build(
    state: Any,
    *,
    grants: tuple[Grant, ...],
    stdio_grant: Grant | None = None,
    http_url: str | None = None,
) -> MCPServer:
    """The server over ``state``. ``stdio_grant``: the caller of a stdio server;
    ``http_url`` (``http://host:port``): serve over HTTP with bearer tokens from ``grants``."""
    import anyio
    from mcp.server.auth.settings import AuthSettings
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp.types import ToolAnnotations
    from pydantic import AnyHttpUrl

    if (stdio_grant is None) == (http_url is None):
        raise ValueError("give exactly one of stdio_grant and http_url")
    kw: dict[str, Any] = {}
    if http_url is not None:
        kw["token_verifier"] = GrantVerifier(grants)
        kw["auth"] = AuthSettings(
            issuer_url=AnyHttpUrl(http_url),
            resource_server_url=AnyHttpUrl(f"{http_url}/mcp"),
            validate_token_resource=False,
        )
    server = MCPServer("observer", version=__version__, instructions=INSTRUCTIONS, log_level="WARNING", **kw)
    tools = Tools(state)

    def caller() -> Caller:
        return Caller(stdio_grant, "mcp-stdio") if stdio_grant is not None else _http_caller(grants)

    def tool(fn: Callable[..., Any]) -> Callable[..., Any]:
        async def run(**kwargs: Any) -> str:
            who = caller()
            try:
                return _json(await anyio.to_thread.run_sync(functools.partial(fn, who, **kwargs)))
            except ToolRefused as exc:
                raise ToolError(str(exc)) from None

        # what clients see: fn's parameters without the caller, its name and docstring
        sig = inspect.signature(fn, eval_str=True)
        params = list(sig.parameters.values())[1:]
        run.__signature__ = sig.replace(parameters=params, return_annotation=str)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in params} | {"return": str}
        run.__name__ = run.__qualname__ = fn.__name__
        run.__doc__ = fn.__doc__
        destructive = fn.__name__ in DESTRUCTIVE_TOOLS
        hints = ToolAnnotations(read_only_hint=not destructive, destructive_hint=destructive, open_world_hint=False)
        server.add_tool(run, name=fn.__name__, description=inspect.cleandoc(fn.__doc__ or ""), annotations=hints)
        return run

    # The signatures below are what clients see (names, types, defaults, docstrings).

    @tool
    def nodes(c: Caller) -> Any:
        """The observed nodes: status (up/syncing/down/connecting), process and supervisor counts, rates."""
        return tools.nodes()

    @tool
    def tree(c: Caller, node: str, group_threshold: int = 20) -> Any:
        """A node's supervision tree, nested; siblings above group_threshold are grouped."""
        return tools.tree(node, group_threshold)

    @tool
    def find_processes(c: Caller, node: str, query: str, limit: int = 50) -> Any:
        """Processes of a node whose pid, registered name or label contains query."""
        return tools.find_processes(node, query, limit)

    @tool
    def process_info(c: Caller, node: str, pid: str) -> Any:
        """One process (pid like <0.42.0> or a registered name): record, links, monitors, children,
        restart history, and the agent's inspection with its state redacted."""
        return tools.process_info(c, node, pid)

    @tool
    def crash_groups(c: Caller, node: str | None = None, query: str | None = None, limit: int = 50) -> Any:
        """Stored crashes grouped by signature (exception and innermost own frame), latest first."""
        return tools.crash_groups(node, query, limit)

    @tool
    def crash_report(c: Caller, report_id: int) -> Any:
        """One stored crash report (traceback, state before, ancestry) with its group."""
        return tools.crash_report(report_id)

    @tool
    def events(
        c: Caller,
        node: str | None = None,
        since: float | None = None,
        until: float | None = None,
        kinds: list[str] | None = None,
        query: str | None = None,
        limit: int = 100,
    ) -> Any:
        """Stored events in a time window (Unix seconds), newest first; kinds like spawn, exit, restart."""
        return tools.events(node, since, until, kinds, query, limit)

    @tool
    def kill_preview(c: Caller, node: str, pid: str, reason: str = "kill") -> Any:
        """What killing a process would do (links, supervisor restarts, budgets), without doing it."""
        return tools.kill_preview(node, pid, reason)

    if state.allow_destructive:

        @tool
        def kill(c: Caller, node: str, pid: str, reason: str = "kill") -> Any:
            """Kill a process (operator grant; audited before it runs)."""
            return tools.act(c, "kill", node, pid, reason=reason)

        @tool
        def suspend(c: Caller, node: str, pid: str) -> Any:
            """Suspend a process (operator grant; audited)."""
            return tools.act(c, "suspend", node, pid)

        @tool
        def resume(c: Caller, node: str, pid: str) -> Any:
            """Resume a suspended process (operator grant; audited)."""
            return tools.act(c, "resume", node, pid)

        @tool
        def send(c: Caller, node: str, pid: str, message: Any) -> Any:
            """Send a JSON message to a process (operator grant; audited)."""
            return tools.act(c, "send", node, pid, message=message)

    return server


def serve_http(server: MCPServer, sock: Any, host: str, port: int) -> None:
    """Serve ``server`` over streamable HTTP at ``/mcp`` on the bound ``sock`` (uvicorn) until stopped.
    Host and Origin must be the bound address's (DNS-rebinding protection)."""
    import anyio
    import uvicorn
    from mcp.server.transport_security import TransportSecuritySettings

    hosts = [f"{host}:{port}"] + ([f"localhost:{port}", f"127.0.0.1:{port}"] if host in ("127.0.0.1", "::1") else [])
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=hosts,
        allowed_origins=[f"http://{h}" for h in hosts],
    )
    app = server.streamable_http_app(host=host, transport_security=security)
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    anyio.run(lambda: uv.serve(sockets=[sock]))
