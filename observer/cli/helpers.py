"""What the ``observer`` commands share: server options, secrets, the serving loop.

Secrets never come from the command line (``ps`` shows it to everyone):

* node tokens (the observer's tokens for reaching agents): ``--node-token-file``,
  ``OBSERVER_NODE_TOKEN_FILE`` or ``OBSERVER_NODE_TOKEN`` (:func:`read_node_tokens`);
* the scrape token of ``/metrics``: ``--metrics-token-file``,
  ``OBSERVER_METRICS_TOKEN_FILE`` or ``OBSERVER_METRICS_TOKEN`` (no token: no
  ``/metrics`` on the UI's port);
* login tokens (for the browser): ``--login-token-file``,
  ``OBSERVER_LOGIN_TOKEN_FILE`` or ``OBSERVER_LOGIN_TOKEN``, generated
  otherwise and printed in the URL (:func:`login_tokens`).

``OBSERVER_AGENT_TOKEN(_FILE)`` is the agent's own token, read by the agent
only (``agent.start_from_env``).

Threading rules
    Everything here runs in the command's (main) thread; :func:`run` blocks
    in the server until SIGINT/SIGTERM.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import threading
import webbrowser
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from ..app import ASYNC_MODES, AttachSpec, ObserverConfig, ObserverState, create_app
from ..attach import parse_address
from ..db import PostgresBackend, StoreError, is_postgres_url
from ..db.postgresql import has_password
from ..permissions import Grant, parse_login_tokens
from ..security import is_loopback, loose_permissions
from ..serve import bind_socket, serve

__all__ = [
    "FILE",
    "NODE_TOKEN_HINT",
    "HistoryDB",
    "bind",
    "check_tls",
    "http_options",
    "login_tokens",
    "make_config",
    "metrics_token",
    "no_node_token",
    "on_forced_exit",
    "raise_exit",
    "read_node_tokens",
    "read_secret",
    "run",
    "server_options",
    "warn_renamed_env",
]

NODE_TOKEN_HINT = "--node-token-file or OBSERVER_NODE_TOKEN(_FILE)"
"""Where node tokens come from, for error messages."""

RENAMED_ENV = {
    "OBSERVER_TOKEN": "OBSERVER_LOGIN_TOKEN",
    "OBSERVER_TOKEN_FILE": "OBSERVER_LOGIN_TOKEN_FILE",
}
"""Environment variables the observer read before 0.2.0, and their names now."""

NOT_READ_ENV = {
    "OBSERVER_AGENT_TOKEN": "OBSERVER_NODE_TOKEN",
    "OBSERVER_AGENT_TOKEN_FILE": "OBSERVER_NODE_TOKEN_FILE",
}
"""The agent's own token: the observer read it before 0.2.0, for reaching agents."""


FILE = click.Path(exists=True, dir_okay=False)
"""An existing file (not a directory)."""


class HistoryDB(click.ParamType):
    """``--db``: an SQLite file (not a directory), or a ``postgresql://`` URL
    checked up front (psycopg installed, the URL well formed, no password in it:
    ``ps`` shows the command line to everyone)."""

    name = "PATH|URL"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        where = str(value)
        if not is_postgres_url(where):
            return str(click.Path(dir_okay=False).convert(where, param, ctx))
        if has_password(where):
            self.fail("leave the password out of the URL (the command line is visible to every user): "
                      "put it in PGPASSWORD or ~/.pgpass", param, ctx)  # fmt: skip
        try:
            PostgresBackend(where)
        except StoreError as exc:
            self.fail(str(exc), param, ctx)
        return where


_HTTP = [
    click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="0: any free port"),
    click.option("--host", default="127.0.0.1", show_default=True, help="address to bind (loopback by default)"),
    click.option(
        "--db",
        type=HistoryDB(),
        default=None,
        help="history: an SQLite file (default: temporary), or postgresql://user@host:port/dbname shared by "
        "several servers (password from PGPASSWORD or ~/.pgpass)",
    ),
    click.option(
        "--allowed-origin", "allowed_origins", multiple=True, help="extra allowed Origin (scheme://host:port)"
    ),
    click.option("--login-token-file", type=FILE, default=None, help="login token(s), or OBSERVER_LOGIN_TOKEN(_FILE)"),
    click.option("--no-browser", is_flag=True, help="do not open a browser"),
    click.option("--tls-cert", type=FILE, default=None, help="HTTPS certificate (PEM)"),
    click.option("--tls-key", type=FILE, default=None, help="HTTPS private key (PEM)"),
    click.option("--insecure-http", is_flag=True, help="allow plain HTTP on a non-loopback address"),
]
"""Options of every command that serves the UI."""

_SERVER = [
    *_HTTP,
    click.option("--allow-destructive-actions", is_flag=True, help="enable kill/suspend/resume/send (audited)"),
    click.option("--async-mode", type=click.Choice(ASYNC_MODES), default="threading", show_default=True),
    click.option(
        "--metrics-token-file", type=FILE, default=None, help="serve /metrics to this bearer token (docs/metrics.md)"
    ),
    click.option("--metrics-listen", default=None, help="HOST:PORT of a separate server for /metrics"),
]
"""Options of the commands that observe live agents (``demo``, ``serve``)."""


def _apply(options: list[Callable[[Any], Any]], fn: Any) -> Any:
    for opt in reversed(options):
        fn = opt(fn)
    return fn


def http_options(fn: Any) -> Any:
    """Decorate a command with the options of a server of the UI."""
    return _apply(_HTTP, fn)


def server_options(fn: Any) -> Any:
    """:func:`http_options`, plus destructive actions and the async mode."""
    return _apply(_SERVER, fn)


def read_secret(path: str) -> str:
    """A file's text, stripped; a usage error if it is empty; a warning if others may read it."""
    loose = loose_permissions(path)
    if loose is not None:
        click.echo(f"observer: warning: {loose}", err=True)
    text = Path(path).read_text(encoding="utf-8").strip()
    if not text:
        raise click.UsageError(f"{path} is empty")
    return text


def warn_renamed_env() -> None:
    """A warning on stderr for each environment variable the observer no longer reads."""
    for old, new in RENAMED_ENV.items():
        if os.environ.get(old) and not os.environ.get(new):
            click.echo(f"observer: warning: {old} is not read since 0.2.0: it is now {new}", err=True)


def login_tokens(path: str | None) -> tuple[str, tuple[Grant, ...]]:
    """The login token (for the printed URL) and the grants: from ``--login-token-file``,
    ``OBSERVER_LOGIN_TOKEN_FILE`` or ``OBSERVER_LOGIN_TOKEN`` (one operator token), else a fresh one."""
    warn_renamed_env()
    path = path or os.environ.get("OBSERVER_LOGIN_TOKEN_FILE") or None
    if path:
        try:
            grants = parse_login_tokens(read_secret(path))
        except ValueError as exc:
            raise click.UsageError(f"{path}: {exc}") from None
        return grants[0].token, grants
    token = os.environ.get("OBSERVER_LOGIN_TOKEN") or secrets.token_urlsafe(24)
    return token, ()


def read_node_tokens(path: str | None) -> dict[str, str]:
    """Node tokens: ``{"*": token}`` for a file (or env) holding one token, or
    ``{name_or_address: token}`` for lines ``NAME_OR_HOST:PORT TOKEN`` (``#`` comments).
    From ``path``, else ``OBSERVER_NODE_TOKEN_FILE``, else ``OBSERVER_NODE_TOKEN``."""
    text = None
    if path:
        text = read_secret(path)
    elif os.environ.get("OBSERVER_NODE_TOKEN_FILE"):
        text = read_secret(os.environ["OBSERVER_NODE_TOKEN_FILE"])
    elif os.environ.get("OBSERVER_NODE_TOKEN"):
        text = os.environ["OBSERVER_NODE_TOKEN"].strip()
    if not text:
        return {}
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    if len(lines) == 1 and len(lines[0].split()) == 1:
        return {"*": lines[0]}
    out: dict[str, str] = {}
    for ln in lines:
        parts = ln.split()
        if len(parts) != 2:
            raise click.UsageError("node token file lines must be 'NAME_OR_HOST:PORT TOKEN'")
        out[parts[0]] = parts[1]
    return out


def no_node_token(what: str) -> click.UsageError:
    """The error for a node without a token (naming the agent's variables if they are set)."""
    msg = f"no token for {what}: use {NODE_TOKEN_HINT}"
    stale = [old for old in NOT_READ_ENV if os.environ.get(old)]
    if stale:
        msg += f" ({' and '.join(stale)} is the agent's own token, not read by the observer since 0.2.0)"
    return click.UsageError(msg)


def check_tls(opts: dict[str, Any]) -> None:
    """HTTPS when not on loopback, unless ``--insecure-http`` says otherwise (before binding)."""
    if bool(opts["tls_cert"]) != bool(opts["tls_key"]):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if opts["tls_cert"] and opts.get("async_mode", "threading") != "threading":
        raise click.UsageError("HTTPS (--tls-cert) is served in threading mode only")
    if not opts["tls_cert"] and not is_loopback(opts["host"]) and not opts["insecure_http"]:
        raise click.UsageError(
            f"refusing plain HTTP on {opts['host']} (not loopback): give --tls-cert/--tls-key, "
            "or --insecure-http if something in front terminates TLS"
        )


def bind(opts: dict[str, Any]) -> Any:
    """The listening socket for the UI (after :func:`check_tls`)."""
    check_tls(opts)
    try:
        return bind_socket(opts["host"], opts["port"])
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {opts['host']}:{opts['port']}: {exc.strerror or exc}") from None


def make_config(opts: dict[str, Any], sock: Any, attach: tuple[AttachSpec, ...] = ()) -> ObserverConfig:
    """The app's config from the options of :func:`http_options` / :func:`server_options`."""
    login_token, grants = login_tokens(opts["login_token_file"])
    if opts.get("metrics_listen"):
        try:
            parse_address(opts["metrics_listen"])
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--metrics-listen") from None
    return ObserverConfig(
        tls=bool(opts["tls_cert"]),
        tls_cert=opts["tls_cert"],
        tls_key=opts["tls_key"],
        host=opts["host"],
        port=int(sock.getsockname()[1]),
        login_token=login_token,
        grants=grants,
        allow_destructive_actions=opts.get("allow_destructive_actions", False),
        allowed_origins=tuple(opts["allowed_origins"]),
        async_mode=opts.get("async_mode", "threading"),
        db=opts["db"],
        attach=attach,
        metrics_token=metrics_token(opts.get("metrics_token_file")),
        metrics_listen=opts.get("metrics_listen"),
    )


def metrics_token(path: str | None) -> str | None:
    """The scrape token: ``--metrics-token-file``, ``OBSERVER_METRICS_TOKEN_FILE`` or ``OBSERVER_METRICS_TOKEN``."""
    path = path or os.environ.get("OBSERVER_METRICS_TOKEN_FILE") or None
    if path:
        return read_secret(path)
    return os.environ.get("OBSERVER_METRICS_TOKEN") or None


def run(
    config: ObserverConfig,
    sock: Any,
    *,
    no_browser: bool,
    banner: Sequence[str],
    setup: Callable[[ObserverState], None] | None = None,
) -> None:
    """Print the login URL, open a browser, and serve until SIGINT/SIGTERM.
    ``setup`` runs on each app's state as it is built (in the serving process)."""
    url = f"{config.url()}/login?token={config.login_token}"
    for line in banner:
        click.echo(f"observer: {line}")
    click.echo(f"observer: open {url}")
    sys.stdout.flush()
    if not no_browser:
        webbrowser.open(url)
    signal.signal(signal.SIGTERM, raise_exit)
    states: list[ObserverState] = []

    def factory() -> Any:
        app, socketio = create_app(config)
        state: ObserverState = app.extensions["observer"]
        states.append(state)
        if setup is not None:
            setup(state)
        return app, socketio

    def on_exit() -> None:
        for st in states:
            st.close()

    serve(
        factory,
        sock,
        async_mode=config.async_mode,
        on_exit=on_exit,
        tls_cert=config.tls_cert,
        tls_key=config.tls_key,
    )


_FORCED_EXIT_HOOKS: list[Callable[[], None]] = []
"""Run before a forced exit (the demo process must not outlive us)."""


def on_forced_exit(hook: Callable[[], None]) -> None:
    """Run ``hook`` before the process is ended by force (see :func:`raise_exit`)."""
    _FORCED_EXIT_HOOKS.append(hook)


def raise_exit(signum: int, frame: Any) -> None:
    """SIGTERM handler: raise ``SystemExit`` so that every ``finally`` runs."""
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
