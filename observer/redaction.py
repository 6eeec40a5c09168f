"""Scrubbing what operators typed before it is stored: the agent's redaction rules.

Action arguments (a ``send``'s message, a chaos experiment's settings, ...)
go into the audit log, its exports and its live feed, which read-only logins
can read. They are encoded with the agent's public :class:`agent.Redactor`
first, under the same :class:`agent.RedactionPolicy` the agent applies to a
mailbox: a value under a secret-looking key (``password``, ``token``, ...)
becomes ``"***"``, and sizes are bounded. So the audit log never shows what
the mailbox view masks.

Threading rules: pure; any thread.
"""

from __future__ import annotations

from typing import Any

from agent import RedactionPolicy, Redactor

__all__ = ["redact_args"]

_REDACTOR = Redactor(RedactionPolicy(max_string=2000, max_bytes=16 * 1024))


def redact_args(args: dict[str, Any] | None) -> dict[str, Any]:
    """``args`` as they may be stored: secrets masked, bounded, JSON-able (never raises)."""
    if not args:
        return {}
    data = _REDACTOR.encode(args).data
    return data if isinstance(data, dict) else {"args": data}
