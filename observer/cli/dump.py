"""``observer open DUMP``: serve a post-mortem dump in the UI, as a frozen node.

    observer open DUMP [--name NAME] [--port N] [--host H] [--db PATH] [--login-token-file F]
                       [--tls-cert F --tls-key F] [--no-browser]

The dump is read (:mod:`observer.dump`) before anything is bound, so a file
that is not a dump is a clear error; the server never allows destructive
actions (there is no agent to act on).

Threading rules
    The command runs in the main thread, which then blocks in the server
    until SIGINT/SIGTERM.
"""

from __future__ import annotations

from typing import Any

import click

from ..app import ObserverState
from ..dump import install, load
from . import helpers as h

__all__ = ["open_dump"]


@click.command(name="open")
@click.argument("dump", type=h.FILE)
@click.option("--name", default=None, help="the node's name in the UI (default: dump-<node>-<ospid>)")
@h.http_options
def open_dump(dump: str, name: str | None, **opts: Any) -> None:
    """Serve a post-mortem DUMP in the observer, as a frozen node (read-only)."""
    try:
        load(dump)  # a clear error before binding anything
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    sock = h.bind(opts)
    config = h.make_config(opts, sock)

    def setup(state: ObserverState) -> None:
        install(state.manager, state.store, dump, name)

    h.run(
        config,
        sock,
        no_browser=opts["no_browser"],
        banner=[f"post-mortem dump {dump} (frozen, read-only)"],
        setup=setup,
    )
