"""Attachments: keep a :class:`NodeModel` (and the history) in sync with an agent.

One background thread runs one asyncio loop shared by every attachment
(:class:`AttachManager`). Each :class:`Attachment` connects with
:class:`agent.client.AgentClient`, feeds every pushed message (snapshot
parts, events, samples, gaps) into its model and store, and when the
connection drops marks the node down (the last-known picture is kept) and
re-attaches with jittered exponential backoff (an agent that answers ``busy``,
its handshake pool full, is retried within 250 ms); a node shown up whose
attempt fails is marked down, in the model and the history alike. The agent
starts every session (and every resync after a ``gap``) with a fresh
snapshot, which replaces the picture.

Threading rules
    * :meth:`Attachment.command`, :meth:`Attachment.run_audited`,
      :meth:`Attachment.kill_preview`, :meth:`Attachment.stop` and every
      :class:`AttachManager` method may be called from any thread *except*
      the manager's loop thread (they block on it); coroutines running on the
      loop use :meth:`Attachment.acommand`.
    * Change listeners (:meth:`Attachment.on_change`,
      :meth:`AttachManager.on_change`) are called on the loop thread, with a
      batch of changes at most every ``change_interval`` seconds; they must
      be quick (hand over to Socket.IO, say) and must not call the blocking
      methods above.
    * The model and the store are thread-safe on their own: read them from
      anywhere.

Modules: :mod:`._attachment` (the link: connect, feed, reconnect),
:mod:`._commands` (commands and the kill preview), :mod:`._manager` (the
loop thread and the attachments on it), :mod:`._common` (what they share).
"""

from __future__ import annotations

from ._attachment import Attachment
from ._common import BUSY_RETRY, BUSY_RETRY_MAX, E_NOT_CONNECTED, FREEZE_AT, compress_changes, parse_address
from ._common import call_on as _call  # noqa: F401  (observer.dialin blocks on the loop with it)
from ._manager import AttachManager

__all__ = [
    "BUSY_RETRY",
    "BUSY_RETRY_MAX",
    "E_NOT_CONNECTED",
    "FREEZE_AT",
    "AttachManager",
    "Attachment",
    "compress_changes",
    "parse_address",
]
