"""Exception chains: captured cheaply when a process dies, laid out when read.

:func:`capture_chain` keeps a reference to each exception of a cause/context
chain and to its traceback as it is at the crash (~20 us, on the node's loop);
:func:`frames` and :func:`format_chain` read source lines and lay the text out
later, on the reader's thread (see :mod:`actors._crash`, "Cost on the hot
path").
"""

from __future__ import annotations

import asyncio
import linecache
import os
import traceback as _tb
from dataclasses import dataclass
from types import TracebackType

__all__ = ["ChainLink", "ExceptionInfo", "TraceFrame", "capture_chain", "format_chain", "frames"]

_RUNTIME_DIRS = (
    os.path.dirname(os.path.abspath(__file__)) + os.sep,
    os.path.dirname(os.path.abspath(asyncio.__file__)) + os.sep,
)
MAX_CHAIN = 8
"""Exceptions of a cause/context chain kept (the exception itself included)."""
MAX_FRAMES = 64
"""Frames kept per exception (the innermost ones)."""


@dataclass(frozen=True, slots=True)
class TraceFrame:
    """One frame of a traceback."""

    file: str
    """The source file."""
    line: int | None
    """The line number."""
    function: str
    """The function's (qualified when known) name."""
    source: str | None
    """The source line, stripped (None if unavailable)."""
    own: bool
    """True for the process's own code; False for the runtime's (``actors``,
    ``asyncio``): the mailbox loop and the task machinery."""


@dataclass(frozen=True, slots=True)
class ExceptionInfo:
    """One exception of the chain."""

    type: str
    """The exception class, qualified by its module unless it is a builtin."""
    message: str
    """``str(exc)`` (``<unprintable ...>`` if that raised)."""
    frames: tuple[TraceFrame, ...]
    """The process's own frames first (in call order), then the runtime's (in
    call order). The innermost own frame is the last one with ``own`` set."""
    relation: str | None
    """How it relates to the previous exception in the chain: None for the
    exception itself, ``"cause"`` (``raise ... from`` it) or ``"context"``
    (raised while handling it)."""


@dataclass(frozen=True, slots=True)
class ChainLink:
    """One exception of the chain as it was when the process died: the
    traceback is the one it had then (re-raising it later starts a new one)."""

    type: str
    message: str
    exc: BaseException
    tb: TracebackType | None
    relation: str | None


def _is_own(filename: str) -> bool:
    return not filename.startswith(_RUNTIME_DIRS) and not filename.startswith("<frozen")


def _raw_frames(tb: TracebackType | None) -> list[tuple[str, int | None, str, str]]:
    """(file, line, qualified name, name) of a traceback's frames, in call
    order, the innermost MAX_FRAMES."""
    raw: list[tuple[str, int | None, str, str]] = []
    while tb is not None:
        code = tb.tb_frame.f_code
        raw.append((code.co_filename, tb.tb_lineno, code.co_qualname, code.co_name))
        tb = tb.tb_next
    return raw[-MAX_FRAMES:]


def _source(filename: str, lineno: int | None) -> str:
    try:
        return linecache.getline(filename, lineno).strip() if lineno else ""
    except Exception:
        return ""


def frames(tb: TracebackType | None) -> tuple[TraceFrame, ...]:
    """A traceback's frames with their source lines: the process's own first, then the runtime's."""
    frames = [
        TraceFrame(filename, lineno, fn, _source(filename, lineno) or None, _is_own(filename))
        for filename, lineno, fn, _ in _raw_frames(tb)
    ]
    own = [f for f in frames if f.own]
    rest = [f for f in frames if not f.own]
    return tuple(own + rest)


def _type_name(exc: BaseException) -> str:
    cls = type(exc)
    mod = cls.__module__
    return cls.__qualname__ if mod in ("builtins", "__main__") else f"{mod}.{cls.__qualname__}"


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<unprintable {type(exc).__name__}>"


def capture_chain(exc: BaseException) -> tuple[ChainLink, ...]:
    """The exception and its cause/context chain, with each one's traceback as
    it is now. Cheap (a walk of at most MAX_CHAIN links): frames and text are
    read from it later (:attr:`CrashReport.exceptions`, ``traceback``)."""
    out: list[ChainLink] = []
    seen: set[int] = set()
    cur: BaseException | None = exc
    relation: str | None = None
    while cur is not None and id(cur) not in seen and len(out) < MAX_CHAIN:
        seen.add(id(cur))
        out.append(ChainLink(_type_name(cur), _message(cur), cur, cur.__traceback__, relation))
        if cur.__cause__ is not None:
            cur, relation = cur.__cause__, "cause"
        elif cur.__context__ is not None and not cur.__suppress_context__:
            cur, relation = cur.__context__, "context"
        else:
            cur = None
    return tuple(out)


_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"


def format_chain(chain: tuple[ChainLink, ...]) -> str:
    """A captured chain laid out as Python prints it, oldest exception first
    (without the ``^^^`` position markers: working those out parses every
    line's source, ~0.3 ms a traceback)."""
    parts: list[str] = []
    for i in range(len(chain) - 1, -1, -1):
        link = chain[i]
        raw = _raw_frames(link.tb)
        if raw:
            parts.append("Traceback (most recent call last):\n")
            for filename, lineno, _, fn in raw:
                parts.append(f'  File "{filename}", line {lineno}, in {fn}\n')
                src = _source(filename, lineno)
                if src:
                    parts.append(f"    {src}\n")
        try:
            parts.extend(_tb.format_exception_only(type(link.exc), link.exc))
        except Exception as err:  # a broken __str__, say
            parts.append(f"{link.type}: <unprintable: {type(err).__name__}>\n")
        if i > 0:
            parts.append(_CAUSE if link.relation == "cause" else _CONTEXT)
    return "".join(parts)
