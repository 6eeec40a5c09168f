"""``observer mcp``: an MCP server over the observer's live model and history.

* :mod:`.tools` -- the tools' work as plain functions over an
  :class:`observer.app.ObserverState` (reads, and the gated, audited actions);
* :mod:`.server` -- the official ``mcp`` SDK's server around them, with
  authentication by the web app's login tokens (stdio and streamable HTTP).

The ``mcp`` package is an optional dependency (the ``mcp`` extra): import
:mod:`.server` only where it is needed (``observer mcp`` does).
See ``docs/mcp.md``.
"""

from __future__ import annotations

from .tools import DESTRUCTIVE_TOOLS, READ_TOOLS, Caller, ToolRefused, Tools

__all__ = ["DESTRUCTIVE_TOOLS", "READ_TOOLS", "Caller", "ToolRefused", "Tools"]
