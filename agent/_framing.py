"""Frames as bytes: a 4-byte big-endian length, then that many bytes of UTF-8
JSON (one object with a string ``t``). Re-exported by :mod:`agent.protocol`,
which declares what the objects hold."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from typing import Any, Final

_orjson: Any
try:  # optional, about ten times faster; the frames are the same JSON
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on what is installed
    _orjson = None

HEADER = struct.Struct(">I")
"""Frame header: payload length, unsigned 32-bit big-endian."""
MAX_INBOUND_FRAME: Final = 1 << 20
"""Default cap on a frame the agent accepts (1 MiB)."""
MAX_OUTBOUND_FRAME: Final = 16 << 20
"""Default cap on a frame an observer accepts (16 MiB); snapshots are chunked below it."""

E_BAD_FRAME: Final = "bad_frame"
"""Not a length-prefixed JSON object, or over the size limit. The connection closes."""


class FrameError(ValueError):
    """A frame that cannot be accepted; ``code`` is one of the ``E_*`` codes."""

    def __init__(self, message: str, code: str = E_BAD_FRAME) -> None:
        super().__init__(message)
        self.code = code


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str)
"""Built once: ``json.dumps`` with options builds a new encoder per call (~2.5 us of a 10 us event)."""

FAST_JSON: bool = _orjson is not None and os.environ.get("OBSERVER_AGENT_JSON", "").lower() != "stdlib"
"""Encode the agent's own frames (``fast=True``) with ``orjson`` when it is
installed; ``OBSERVER_AGENT_JSON=stdlib`` turns it off. An exit event with its
crash report encodes in ~3 us instead of ~24 here."""


def _fast(obj: Mapping[str, Any]) -> bytes | None:
    """``obj`` by orjson, None if it cannot (the standard library then does).
    Without ``OPT_NON_STR_KEYS``: the agent's own frames have text keys only
    (the redactor turns every key to text), and the option made every dict
    slower to write (callgrind, an exit with its report in a batch: 17,200
    instructions with it, 10,300 without); a frame with another key falls
    back to the standard library, which writes int, float, bool and None keys
    as orjson did."""
    assert _orjson is not None
    try:
        return _orjson.dumps(obj, default=str)
    except (TypeError, ValueError, OverflowError, RecursionError):  # an int past 64 bits, say
        return None


def encode_frame(obj: Mapping[str, Any], *, limit: int = MAX_OUTBOUND_FRAME, fast: bool = False) -> bytes:
    """One frame: header + compact JSON. Raises :class:`FrameError` over ``limit``.

    ``obj`` is one of the message shapes of :mod:`agent.protocol` (a plain
    dict at run time). ``fast``: the caller vouches that ``obj`` holds no
    non-finite float (the agent's events, samples and snapshot records are
    built so: values from the running system pass the redactor, which turns
    them to text, and the agent's own numbers are finite, see
    ``_encode.finite``); then :data:`FAST_JSON` may encode it. ``orjson``
    writes such a float as ``null``, where this function otherwise sends its
    text (``"inf"``)."""
    payload = _fast(obj) if fast and FAST_JSON else None
    if payload is None:
        try:
            text = _ENCODER.encode(obj)
        except ValueError:  # NaN or infinity somewhere: JSON has no such numbers
            text = _ENCODER.encode(_finite(obj))
        payload = text.encode()
    if len(payload) > limit:
        raise FrameError(f"frame of {len(payload)} bytes exceeds the {limit}-byte limit")
    return HEADER.pack(len(payload)) + payload


def _finite(v: Any) -> Any:
    """Replace non-finite floats with their text (``"inf"``, ``"nan"``)."""
    if isinstance(v, float):
        return v if v == v and v not in (float("inf"), float("-inf")) else str(v)
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_finite(x) for x in v]
    return v


def decode_payload(payload: bytes) -> dict[str, Any]:
    """Parse one frame's payload; raises :class:`FrameError` unless it is a JSON
    object with a string ``t``."""
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FrameError(f"frame is not UTF-8 JSON: {type(exc).__name__}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("t"), str):
        raise FrameError("frame is not a JSON object with a string 't'")
    return obj


class FrameDecoder:
    """Incremental decoder for a byte stream (used by tests and fuzzing; the
    agent reads frames with ``readexactly``)."""

    def __init__(self, limit: int = MAX_INBOUND_FRAME) -> None:
        self.limit = limit
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """Add bytes; return the complete frames. Raises :class:`FrameError`."""
        self._buf += data
        out: list[dict[str, Any]] = []
        while len(self._buf) >= HEADER.size:
            (n,) = HEADER.unpack_from(self._buf)
            if n > self.limit:
                raise FrameError(f"frame of {n} bytes exceeds the {self.limit}-byte limit")
            if len(self._buf) < HEADER.size + n:
                break
            payload = bytes(self._buf[HEADER.size : HEADER.size + n])
            del self._buf[: HEADER.size + n]
            out.append(decode_payload(payload))
        return out
