"""The ``observer`` command (click), thin: each command calls library functions.

    observer demo  [--port 0|N] [--seed N] [--scale N] [--allow-destructive-actions] [--db PATH] [--no-browser]
    observer serve --attach [NAME=]HOST:PORT ... [--token-file F] [--login-token-file F] [--port N] [--host H]
                   [--allow-destructive-actions] [--db PATH] [--async-mode threading|eventlet]

Secrets never come from the command line (``ps`` shows it to everyone):
agent tokens from ``--token-file`` or ``OBSERVER_AGENT_TOKEN`` /
``OBSERVER_AGENT_TOKEN_FILE``; the login token from ``--login-token-file``
or ``OBSERVER_TOKEN`` (generated otherwise, and printed in the URL).

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
import threading
import time
import webbrowser
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
from click.core import ParameterSource

from .app import ASYNC_MODES, AttachSpec, ObserverConfig, ObserverState, create_app
from .attach import parse_address
from .cluster import agent_ssl_context, load_config
from .demo import AGENT_LINE
from .dialin import server_ssl_context
from .permissions import Grant, parse_login_tokens
from .security import is_loopback
from .serve import bind_socket, serve

__all__ = ["main", "read_agent_tokens"]

_common = [
    click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="0: any free port"),
    click.option("--host", default="127.0.0.1", show_default=True, help="address to bind (loopback by default)"),
    click.option("--allow-destructive-actions", is_flag=True, help="enable kill/suspend/resume/send (audited)"),
    click.option("--db", type=click.Path(dir_okay=False), default=None, help="SQLite history (default: temporary)"),
    click.option("--async-mode", type=click.Choice(ASYNC_MODES), default="threading", show_default=True),
    click.option(
        "--allowed-origin", "allowed_origins", multiple=True, help="extra allowed Origin (scheme://host:port)"
    ),
    click.option("--login-token-file", type=click.Path(exists=True, dir_okay=False), default=None),
    click.option("--no-browser", is_flag=True, help="do not open a browser"),
    click.option("--certfile", type=click.Path(exists=True, dir_okay=False), default=None, help="HTTPS certificate"),
    click.option("--keyfile", type=click.Path(exists=True, dir_okay=False), default=None, help="HTTPS private key"),
    click.option("--insecure-http", is_flag=True, help="allow plain HTTP on a non-loopback address"),
]


def _options(fn: Any) -> Any:
    for opt in reversed(_common):
        fn = opt(fn)
    return fn


def _read_secret(path: str) -> str:
    text = Path(path).read_text(encoding="utf-8").strip()
    if not text:
        raise click.UsageError(f"{path} is empty")
    return text


def _login_tokens(path: str | None) -> tuple[str, tuple[Grant, ...]]:
    """The login token (for the printed URL) and the grants: from ``--login-token-file``,
    ``OBSERVER_TOKEN_FILE`` or ``OBSERVER_TOKEN`` (one operator token), else a fresh one."""
    path = path or os.environ.get("OBSERVER_TOKEN_FILE") or None
    if path:
        try:
            grants = parse_login_tokens(_read_secret(path))
        except ValueError as exc:
            raise click.UsageError(f"{path}: {exc}") from None
        return grants[0].token, grants
    token = os.environ.get("OBSERVER_TOKEN") or secrets.token_urlsafe(24)
    return token, ()


def read_agent_tokens(path: str | None) -> dict[str, str]:
    """Agent tokens: ``{"*": token}`` for a file (or env) holding one token, or
    ``{name_or_address: token}`` for lines ``NAME_OR_HOST:PORT TOKEN`` (``#`` comments)."""
    text = None
    if path:
        text = _read_secret(path)
    elif os.environ.get("OBSERVER_AGENT_TOKEN_FILE"):
        text = _read_secret(os.environ["OBSERVER_AGENT_TOKEN_FILE"])
    elif os.environ.get("OBSERVER_AGENT_TOKEN"):
        text = os.environ["OBSERVER_AGENT_TOKEN"].strip()
    if not text:
        return {}
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    if len(lines) == 1 and len(lines[0].split()) == 1:
        return {"*": lines[0]}
    out: dict[str, str] = {}
    for ln in lines:
        parts = ln.split()
        if len(parts) != 2:
            raise click.UsageError("token file lines must be 'NAME_OR_HOST:PORT TOKEN'")
        out[parts[0]] = parts[1]
    return out


def _run(config: ObserverConfig, sock: Any, *, no_browser: bool, banner: Sequence[str]) -> None:
    url = f"{config.url()}/login?token={config.login_token}"
    for line in banner:
        click.echo(f"observer: {line}")
    click.echo(f"observer: open {url}")
    sys.stdout.flush()
    if not no_browser:
        webbrowser.open(url)
    signal.signal(signal.SIGTERM, _raise_exit)
    states: list[ObserverState] = []

    def factory() -> Any:
        app, socketio = create_app(config)
        states.append(app.extensions["observer"])
        return app, socketio

    def on_exit() -> None:
        for st in states:
            st.close()

    serve(
        factory,
        sock,
        async_mode=config.async_mode,
        on_exit=on_exit,
        certfile=config.certfile,
        keyfile=config.keyfile,
    )


_FORCED_EXIT_HOOKS: list[Callable[[], None]] = []
"""Run before a forced exit (the demo process must not outlive us)."""


def _raise_exit(signum: int, frame: Any) -> None:
    # The SystemExit normally unwinds the server and runs every `finally`. Under
    # eventlet the handler may run inside a worker greenlet, where SystemExit
    # ends only that greenlet: a watchdog thread then finishes the job.
    if not any(t.name == "observer-exit-watchdog" for t in threading.enumerate()):
        t = threading.Timer(5.0, _forced_exit)
        t.name = "observer-exit-watchdog"
        t.daemon = True
        t.start()
    raise SystemExit(0)


def _forced_exit() -> None:
    for hook in _FORCED_EXIT_HOOKS:
        try:
            hook()
        except Exception:
            pass
    os._exit(0)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """A live observer for supervision trees."""


@main.command()
@click.option("--seed", type=int, default=None, help="seed of the demo's random choices")
@click.option("--scale", type=click.IntRange(1, 1000), default=1, show_default=True, help="load multiplier")
@_options
def demo(seed: int | None, scale: int, **opts: Any) -> None:
    """Run the demo system (its own process, with its agent) and observe it."""
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
    signal.signal(signal.SIGTERM, _raise_exit)  # so that `finally` stops the demo (gunicorn sets its own)
    _FORCED_EXIT_HOOKS.append(lambda: _stop(proc))
    try:
        _check_tls(opts)
        address = _await_agent(proc, timeout=30.0)
        sock = bind_socket(opts["host"], opts["port"])
        config = _config(opts, sock, (AttachSpec("demo", address, token),))
        _run(config, sock, no_browser=opts["no_browser"], banner=[f"demo system (pid {proc.pid}), agent {address}"])
    finally:
        _stop(proc)


@main.command(name="serve")
@click.option("--attach", "attach", multiple=True, help="[NAME=]HOST:PORT of an agent (repeatable)")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None, help="cluster config (TOML)")
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False), default=None, help="agent token(s)")
@click.option("--listen-agents", default=None, help="HOST:PORT to accept agents that dial out (OBSERVER_DIAL)")
@click.option("--agents-certfile", type=click.Path(exists=True, dir_okay=False), help="TLS certificate for it")
@click.option("--agents-keyfile", type=click.Path(exists=True, dir_okay=False), help="TLS key for it")
@click.option("--agents-client-ca", type=click.Path(exists=True, dir_okay=False), help="require agent certificates")
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
@_options
def serve_cmd(
    attach: tuple[str, ...],
    config_file: str | None,
    token_file: str | None,
    listen_agents: str | None,
    agents_certfile: str | None,
    agents_keyfile: str | None,
    agents_client_ca: str | None,
    message_queue: str | None,
    live_publisher: bool,
    **opts: Any,
) -> None:
    """Attach to running agents (and/or accept agents that dial in) and serve the observer."""
    tokens = read_agent_tokens(token_file)
    specs: list[AttachSpec] = []
    cluster = None
    if config_file:
        try:
            cluster = load_config(config_file)
            for n in cluster.nodes:
                ctx = agent_ssl_context(n.tls) if n.tls is not None else None
                host = n.tls.server_hostname if n.tls is not None else None
                specs.append(AttachSpec(n.name, n.address, n.token, ctx, host))
        except (ValueError, OSError) as exc:
            raise click.UsageError(f"--config: {exc}") from None
    if not attach and not specs and not listen_agents:
        raise click.UsageError("nothing to observe: give --attach, --config or --listen-agents")
    agents_ssl = None
    if listen_agents:
        try:
            parse_address(listen_agents)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--listen-agents") from None
        if not tokens:
            raise click.UsageError("--listen-agents needs agent tokens: --token-file or OBSERVER_AGENT_TOKEN(_FILE)")
        if agents_certfile:
            agents_ssl = server_ssl_context(agents_certfile, agents_keyfile, agents_client_ca)
        elif agents_keyfile or agents_client_ca:
            raise click.UsageError("--agents-keyfile/--agents-client-ca need --agents-certfile")
        elif not is_loopback(parse_address(listen_agents)[0]):
            click.echo("observer: warning: agents dial in without TLS (--agents-certfile)", err=True)
    if message_queue and not message_queue.startswith(("redis://", "rediss://")):
        raise click.BadParameter("must be a redis:// or rediss:// URL", param_hint="--message-queue")
    source = click.get_current_context().get_parameter_source("message_queue")
    if message_queue and urlsplit(message_queue).password and source == ParameterSource.COMMANDLINE:
        raise click.UsageError("a password on the command line is visible to every user: use OBSERVER_MESSAGE_QUEUE")
    for item in attach:
        name, _, address = item.rpartition("=")
        try:
            parse_address(address)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--attach") from None
        name = name or address
        tok = tokens.get(name) or tokens.get(address) or tokens.get("*")
        if not tok:
            raise click.UsageError(f"no token for {name}: use --token-file or OBSERVER_AGENT_TOKEN(_FILE)")
        specs.append(AttachSpec(name, address, tok))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise click.UsageError(f"node names must be unique: {', '.join(names)}")
    _check_tls(opts)
    sock = bind_socket(opts["host"], opts["port"])
    config = _config(opts, sock, tuple(specs))
    config.agent_tokens = tokens
    config.agent_tls = cluster.tls if cluster is not None else None
    config.listen_agents = listen_agents
    config.listen_agents_ssl = agents_ssl
    config.message_queue = message_queue
    config.live_publisher = live_publisher
    _run(config, sock, no_browser=opts["no_browser"], banner=[f"attaching to {', '.join(s.name for s in specs)}"])


def _check_tls(opts: dict[str, Any]) -> None:
    """HTTPS when not on loopback, unless ``--insecure-http`` says otherwise (before binding)."""
    if bool(opts["certfile"]) != bool(opts["keyfile"]):
        raise click.UsageError("--certfile and --keyfile go together")
    if opts["certfile"] and opts["async_mode"] != "threading":
        raise click.UsageError("HTTPS (--certfile) is served in threading mode only")
    if not opts["certfile"] and not is_loopback(opts["host"]) and not opts["insecure_http"]:
        raise click.UsageError(
            f"refusing plain HTTP on {opts['host']} (not loopback): give --certfile/--keyfile, "
            "or --insecure-http if something in front terminates TLS"
        )


def _config(opts: dict[str, Any], sock: Any, attach: tuple[AttachSpec, ...]) -> ObserverConfig:
    login_token, grants = _login_tokens(opts["login_token_file"])
    return ObserverConfig(
        tls=bool(opts["certfile"]),
        certfile=opts["certfile"],
        keyfile=opts["keyfile"],
        host=opts["host"],
        port=int(sock.getsockname()[1]),
        login_token=login_token,
        grants=grants,
        allow_destructive_actions=opts["allow_destructive_actions"],
        allowed_origins=tuple(opts["allowed_origins"]),
        async_mode=opts["async_mode"],
        db=opts["db"],
        attach=attach,
    )


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


from .dump import open_cmd  # noqa: E402  (observer open DUMP: defined with the dump reader)

main.add_command(open_cmd)


from .chaos.cli import chaos as chaos_cmd  # noqa: E402  (observer chaos: experiments, docs/chaos.md)

main.add_command(chaos_cmd)
