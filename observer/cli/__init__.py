"""The ``observer`` command (click), thin: each command calls library functions.

    observer demo   the demo system with its agent, observed (:mod:`.serve`)
    observer serve  attach to running agents, accept agents that dial in (:mod:`.serve`)
    observer open   a post-mortem dump, as a frozen node (:mod:`.dump`)
    observer chaos  a chaos experiment against an agent (:mod:`.chaos`)
    observer mcp    the model and history as an MCP server (:mod:`.mcp`)

What the commands share (server options, secrets, the serving loop) is in
:mod:`.helpers`. ``python -m observer`` is the same command.
"""

from __future__ import annotations

import click

from .. import __version__
from .chaos import chaos
from .dump import open_dump
from .mcp import mcp
from .serve import demo, serve

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="observer")
def main() -> None:
    """A live observer for supervision trees."""


main.add_command(demo)
main.add_command(serve)
main.add_command(open_dump)
main.add_command(chaos)
main.add_command(mcp)
