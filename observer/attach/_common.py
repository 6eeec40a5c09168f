"""What the attachment modules share: names, limits, addresses, the loop call.

Threading rules: :func:`call_on` may be called from any thread but the loop's
(it blocks on the loop); the rest are plain functions and constants.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from agent import protocol as P
from agent.client import AgentError

from ..model import Change
from ..model.snapshot import FREEZE_AT as _FREEZE_AT

__all__ = [
    "BUSY_RETRY",
    "BUSY_RETRY_MAX",
    "E_NOT_CONNECTED",
    "FREEZE_AT",
    "ChangeListener",
    "NamedChangeListener",
    "call_on",
    "compress_changes",
    "describe",
    "is_refusal",
    "log",
    "parse_address",
]

log = logging.getLogger("observer.attach")
T = TypeVar("T")

E_NOT_CONNECTED = "not_connected"
"""``AgentError.code`` when a command is sent while the node is not attached."""

ChangeListener = Callable[[list[Change]], None]
NamedChangeListener = Callable[[str, list[Change]], None]

BUSY_RETRY = 0.05
"""Seconds before retrying an agent that answered ``busy`` (grows by half per retry)."""
BUSY_RETRY_MAX = 0.25
"""At most this long between retries of a ``busy`` agent."""

FREEZE_AT = _FREEZE_AT
"""Processes in a fresh snapshot past which the collector forgets the heap
(:func:`observer.model.snapshot.freeze_long_lived`)."""


def parse_address(address: str) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` -> ``(host, port)``."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"address must be HOST:PORT, not {address!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def compress_changes(changes: list[Change]) -> list[Change]:
    """Drop what a later ``reset`` supersedes and keep one ``samples`` per batch."""
    last_reset = max((i for i, c in enumerate(changes) if c.kind == "reset"), default=-1)
    if last_reset > 0:
        changes = [c for c in changes[:last_reset] if c.kind in ("status", "gap", "error")] + changes[last_reset:]
    out: list[Change] = []
    rows = 0
    seen_samples = False
    for c in changes:
        if c.kind == "samples":
            rows += int((c.data or {}).get("rows") or 0)
            seen_samples = True
            continue
        out.append(c)
    if seen_samples:
        out.append(Change("samples", None, {"rows": rows}))
    return out


def call_on(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], timeout: float | None = 10.0) -> T:
    """Run ``coro`` on ``loop`` (another thread's) and wait for its result."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coro.close()
        raise RuntimeError("this blocking call cannot be made from the attach loop thread; await the a* variant")
    return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)


def is_refusal(exc: BaseException) -> bool:
    """A refusal (wrong token, bad certificate), as opposed to a node that is not there."""
    if isinstance(exc, ssl.SSLError):
        return True
    return isinstance(exc, AgentError) and exc.code in (P.E_AUTH_FAILED, P.E_BAD_HANDSHAKE)


def describe(exc: BaseException) -> str:
    """A failed attempt, in a line (``code: message`` for an agent's refusal)."""
    if isinstance(exc, AgentError):
        return f"{exc.code}: {exc.message}"
    if isinstance(exc, asyncio.TimeoutError):
        return "connect timed out"
    return f"{type(exc).__name__}: {exc}"
