"""The observer: attaches to agents and keeps a live, queryable picture of each node.

* :class:`observer.model.NodeModel` -- the live picture of one node (a networkx
  graph), thread-safe, read by pages and handlers;
* :class:`observer.store.HistoryStore` -- SQLite history: events, crashes,
  audit log, checkpoints for time travel;
* :class:`observer.attach.AttachManager` / :class:`observer.attach.Attachment`
  -- the connections to agents, on one background asyncio loop.

The observer uses only the public client API of the agent (``agent.client``,
``agent.protocol``), never the actor runtime.
"""

from __future__ import annotations

from .attach import AttachManager, Attachment
from .model import Change, NodeModel, tidy_layout
from .store import AuditError, HistoryStore, StoreError

__version__ = "0.2.0.dev0"
"""The one version source: ``pyproject.toml`` reads it (``dynamic = ["version"]``)."""

__all__ = [
    "AttachManager",
    "Attachment",
    "AuditError",
    "Change",
    "HistoryStore",
    "NodeModel",
    "StoreError",
    "__version__",
    "tidy_layout",
]
