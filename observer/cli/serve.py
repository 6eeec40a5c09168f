"""``observer demo`` and ``observer serve``: observe live agents and serve the UI.

    observer demo  [--port 0|N] [--seed N] [--scale N] [--allow-destructive-actions] [--db PATH|URL] [--no-browser]
    observer serve --attach [NAME=]HOST:PORT ... [--node-token-file F] [--login-token-file F] [--port N] [--host H]
                   [--config cluster.toml] [--listen-agents HOST:PORT [--agents-tls-cert F --agents-tls-key F
                   [--agents-tls-ca F]]] [--tls-cert F --tls-key F] [--allow-destructive-actions] [--db PATH|URL]
                   [--async-mode threading|eventlet] [--message-queue redis://...]

Threading rules
    The command runs in the main thread, which then blocks in the server
    until SIGINT/SIGTERM; ``observer demo`` stops its demo process on the
    way out.
"""

from __future__ import annotations

import os
import re
import secrets
import selectors
import signal
import subprocess
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import click
from click.core import ParameterSource

from ..app import AttachSpec
from ..attach import parse_address
from ..cluster import ClusterConfig, agent_ssl_context, load_config
from ..demo import AGENT_LINE
from ..dialin import server_ssl_context
from ..security import is_loopback
from . import helpers as h

__all__ = ["demo", "serve"]


@click.command()
@click.option("--seed", type=int, default=None, help="seed of the demo's random choices")
@click.option("--scale", type=click.IntRange(1, 1000), default=1, show_default=True, help="load multiplier")
@click.option("--asyncio", "with_asyncio", is_flag=True, help="also a plain asyncio web service (aiohttp): node 'shop'")
@h.server_options
def demo(seed: int | None, scale: int, with_asyncio: bool, **opts: Any) -> None:
    """Run the demo system (its own process, with its agent) and observe it."""
    h.check_tls(opts)
    token = secrets.token_urlsafe(32)
    # least privilege: the observer gets the operator token only if it may use it
    kind = "OBSERVER_AGENT_TOKEN" if opts["allow_destructive_actions"] else "OBSERVER_AGENT_READ_TOKEN"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBSERVER_AGENT_")}
    env.update({kind: token, "OBSERVER_DEMO_SCALE": str(scale)})
    if seed is not None:
        env["OBSERVER_DEMO_SEED"] = str(seed)
    proc = subprocess.Popen(
        [sys.executable, "-m", "observer.demo"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )
    signal.signal(signal.SIGTERM, h.raise_exit)  # so that `finally` stops the demo (gunicorn sets its own)
    h.on_forced_exit(lambda: _stop(proc))
    shop = None
    try:
        address = _await_agent(proc, timeout=30.0)
        specs = [AttachSpec("demo", address, token)]
        banner = [f"demo system (pid {proc.pid}), agent {address}"]
        if with_asyncio:  # docs/asyncio.md: an asyncio node next to the actors one
            cmd = [sys.executable, "-m", "examples.asyncio_service"]
            shop = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
            h.on_forced_exit(lambda: _stop(shop) if shop is not None else None)
            shop_address = _await_agent(shop, timeout=30.0)
            specs.append(AttachSpec("shop", shop_address, token))
            banner.append(f"asyncio shop service (pid {shop.pid}), agent {shop_address}")
        sock = h.bind(opts)
        config = h.make_config(opts, sock, tuple(specs))
        h.run(config, sock, no_browser=opts["no_browser"], banner=banner)
    finally:
        if shop is not None:
            _stop(shop)
        _stop(proc)


@click.command()
@click.option("--attach", "attach", multiple=True, help="[NAME=]HOST:PORT of an agent (repeatable)")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None, help="cluster config (TOML)")
@click.option("--node-token-file", type=h.FILE, default=None, help="node token(s), or OBSERVER_NODE_TOKEN(_FILE)")
@click.option("--listen-agents", default=None, help="HOST:PORT to accept agents that dial out (OBSERVER_DIAL)")
@click.option("--agents-tls-cert", type=h.FILE, help="TLS certificate of that listener (PEM)")
@click.option("--agents-tls-key", type=h.FILE, help="TLS private key of that listener (PEM)")
@click.option("--agents-tls-ca", type=h.FILE, help="require agent certificates signed by this CA (mutual TLS)")
@click.option(
    "--message-queue",
    default=None,
    envvar="OBSERVER_MESSAGE_QUEUE",
    help="redis://... shared by several observer servers (with a password: OBSERVER_MESSAGE_QUEUE)",
)
@click.option(
    "--live-publisher/--no-live-publisher",
    default=True,
    show_default=True,
    help="push live batches (with --message-queue, one server publishes for all)",
)
@h.server_options
def serve(
    attach: tuple[str, ...],
    config_file: str | None,
    node_token_file: str | None,
    listen_agents: str | None,
    agents_tls_cert: str | None,
    agents_tls_key: str | None,
    agents_tls_ca: str | None,
    message_queue: str | None,
    live_publisher: bool,
    **opts: Any,
) -> None:
    """Attach to running agents (and/or accept agents that dial in) and serve the observer."""
    tokens = h.read_node_tokens(node_token_file)
    cluster = _cluster(config_file)
    specs = [_config_spec(n) for n in cluster.nodes] if cluster is not None else []
    if not attach and not specs and not listen_agents:
        raise click.UsageError("nothing to observe: give --attach, --config or --listen-agents")
    agents_ssl = None
    if listen_agents:
        agents_ssl = _listener_tls(listen_agents, agents_tls_cert, agents_tls_key, agents_tls_ca)
        if not tokens:
            raise click.UsageError(f"--listen-agents needs node tokens: {h.NODE_TOKEN_HINT}")
    _check_message_queue(message_queue)
    for item in attach:
        name, _, address = item.rpartition("=")
        try:
            parse_address(address)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--attach") from None
        name = name or address
        tok = tokens.get(name) or tokens.get(address) or tokens.get("*")
        if not tok:
            raise h.no_node_token(name)
        specs.append(AttachSpec(name, address, tok))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise click.UsageError(f"node names must be unique: {', '.join(names)}")
    sock = h.bind(opts)
    config = h.make_config(opts, sock, tuple(specs))
    config.agent_tokens = tokens
    config.agent_tls = cluster.tls if cluster is not None else None
    config.listen_agents = listen_agents
    config.listen_agents_ssl = agents_ssl
    config.message_queue = message_queue
    config.live_publisher = live_publisher
    h.run(config, sock, no_browser=opts["no_browser"], banner=[f"attaching to {', '.join(names)}"])


def _cluster(path: str | None) -> ClusterConfig | None:
    if not path:
        return None
    try:
        return load_config(path)
    except (ValueError, OSError) as exc:
        raise click.UsageError(f"--config: {exc}") from None


def _config_spec(node: Any) -> AttachSpec:
    if node.tls is None:
        return AttachSpec(node.name, node.address, node.token)
    try:
        ctx = agent_ssl_context(node.tls)
    except (ValueError, OSError) as exc:
        raise click.UsageError(f"--config: node {node.name}: {exc}") from None
    return AttachSpec(node.name, node.address, node.token, ctx, node.tls.server_hostname)


def _listener_tls(listen: str, cert: str | None, key: str | None, ca: str | None) -> Any:
    """The dial-in listener's TLS context (None: plain TCP, with a warning off loopback)."""
    try:
        host, _port = parse_address(listen)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--listen-agents") from None
    if cert:
        try:
            return server_ssl_context(cert, key, ca)
        except (ValueError, OSError) as exc:
            raise click.UsageError(f"--agents-tls-cert: {exc}") from None
    if key or ca:
        raise click.UsageError("--agents-tls-key/--agents-tls-ca need --agents-tls-cert")
    if not is_loopback(host):
        click.echo("observer: warning: agents dial in without TLS (--agents-tls-cert)", err=True)
    return None


def _check_message_queue(url: str | None) -> None:
    if not url:
        return
    if not url.startswith(("redis://", "rediss://")):
        raise click.BadParameter("must be a redis:// or rediss:// URL", param_hint="--message-queue")
    source = click.get_current_context().get_parameter_source("message_queue")
    if urlsplit(url).password and source == ParameterSource.COMMANDLINE:
        raise click.UsageError("a password on the command line is visible to every user: use OBSERVER_MESSAGE_QUEUE")


def _await_agent(proc: subprocess.Popen[bytes], timeout: float) -> str:
    """The agent address the demo process prints (``agent HOST:PORT ...``)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    buf = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise click.ClickException("the demo system did not start in time")
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise click.ClickException(f"the demo system exited (status {proc.wait()})")
            buf += chunk
    line = buf.split(b"\n", 1)[0].decode()
    m = re.match(re.escape(AGENT_LINE) + r"(\S+)", line)
    if m is None:
        raise click.ClickException(f"unexpected output from the demo system: {line!r}")
    return m.group(1)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    for f in (proc.stdin, proc.stdout):
        if f is not None:
            f.close()
