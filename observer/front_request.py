"""When has a request fully arrived? The request scanning of the server's front
(:mod:`observer.front`), on the bytes read so far, without blocking.

A request is its head (request line and fields, up to the blank line) and a
body of ``Content-Length`` bytes. The front answers at once, without a thread,
what it will not wait for: a head over :data:`MAX_HEAD` (431), a body over
:data:`MAX_BODY` (413), a ``Transfer-Encoding`` body (411: browsers never send
one, and its end cannot be known without decoding it). A ``Content-Length``
is read as gunicorn reads it (ASCII digits); anything else counts as no body,
and gunicorn's parser answers it 400 without reading on. ``Expect:
100-continue`` is answered by the front (the field taken out of the head, so
that gunicorn does not answer it a second time).

Threading rules: pure functions on the caller's buffer.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CONTINUE", "MAX_BODY", "MAX_HEAD", "Scan", "refusal", "scan"]

MAX_HEAD = 64 * 1024
"""Largest request head (request line and fields)."""
MAX_BODY = 1 << 20
"""Largest request body (the app's ``MAX_CONTENT_LENGTH``)."""
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
"""The interim answer to ``Expect: 100-continue``."""

_PHRASES = {
    400: "Bad Request",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
}


@dataclass(frozen=True, slots=True)
class Scan:
    """What the bytes read so far say about the request."""

    need: int = -1
    """Bytes the whole request takes (head and body); -1 while the head is incomplete."""
    refuse: int = 0
    """A status to answer at once (and close), or 0."""
    upgrade: bool = False
    """The request asks for a protocol upgrade (a WebSocket)."""
    expect_continue: bool = False
    """The client waits for ``100 Continue`` before its body: :data:`CONTINUE` is due (the
    field was taken out of ``buf`` and ``need`` counts the shorter head)."""


def scan(buf: bytearray) -> Scan:
    """Scan the start of ``buf``: a complete head gives ``need``; a request to refuse gives
    ``refuse``. Empty lines before the request line are dropped from ``buf``, and an
    ``Expect: 100-continue`` field whose body has not arrived yet is taken out of it."""
    while buf.startswith(b"\r\n"):  # empty lines before a request line are allowed
        del buf[:2]
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return Scan(refuse=431 if len(buf) > MAX_HEAD else 0)
    head_len = end + 4
    if head_len > MAX_HEAD:
        return Scan(refuse=431)
    fields = _fields(bytes(buf[:head_len]))
    if "transfer-encoding" in fields:
        return Scan(refuse=411)
    value = fields.get("content-length", "0").strip()
    length = int(value) if value.isascii() and value.isdigit() else 0
    if length > MAX_BODY:
        return Scan(refuse=413)
    upgrade = "upgrade" in fields
    need = head_len + length
    if length and len(buf) < need and fields.get("expect", "").strip().lower() == "100-continue":
        head = b"".join(
            line + b"\r\n" for line in bytes(buf[:end]).split(b"\r\n") if not line.lower().startswith(b"expect:")
        )
        buf[:head_len] = head + b"\r\n"
        return Scan(need=len(head) + 2 + length, upgrade=upgrade, expect_continue=True)
    return Scan(need=need, upgrade=upgrade)


def refusal(status: int) -> bytes:
    """A whole answer with ``status``, closing the connection."""
    body = f"{status} {_PHRASES[status]}\n".encode()
    head = (
        f"HTTP/1.1 {status} {_PHRASES[status]}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def _fields(head: bytes) -> dict[str, str]:
    """The head's fields, names lower-cased (the last of a repeated name wins: gunicorn's
    parser refuses the conflicting ones)."""
    out: dict[str, str] = {}
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            out[name.strip().lower().decode("latin-1")] = value.decode("latin-1")
    return out
