"""The agent <-> observer wire protocol, declared once.

``docs/protocol.md`` is the prose; this module is the code both sides use.
Frames are a 4-byte big-endian length followed by that many bytes of UTF-8
JSON (one object per frame). Every object has a ``t`` (type) field.

Handshake (see :func:`client_mac` / :func:`server_mac`): the agent sends
``hello`` with a fresh nonce and its agent id (nothing else about the host);
the observer answers ``auth`` with its own nonce, its observer id, the role
it asks for and an HMAC-SHA256 keyed by the role's token over both nonces,
both ids and the TLS channel binding; the agent checks it and answers
``welcome`` with its own HMAC over the same (so the observer knows the agent
holds the token too), the node's details and the commands this session may
use. The token itself never crosses the wire, and a MAC made for one
connection is worthless on another (a relay fails).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
from typing import Any, Final, Literal, TypedDict

_orjson: Any
try:  # optional, about ten times faster; the frames are the same JSON
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on what is installed
    _orjson = None

PROTOCOL: Final = "observer-agent"
VERSION: Final = 2
"""2: the handshake binds both peers (agent id, observer id, TLS channel) and
``hello`` carries nothing but what the handshake needs (the node's details come in ``welcome``)."""
SUPPORTED_VERSIONS: Final = (2,)

HEADER = struct.Struct(">I")
"""Frame header: payload length, unsigned 32-bit big-endian."""
MAX_INBOUND_FRAME: Final = 1 << 20
"""Default cap on a frame the agent accepts (1 MiB)."""
MAX_OUTBOUND_FRAME: Final = 16 << 20
"""Default cap on a frame an observer accepts (16 MiB); snapshots are chunked below it."""

ROLE_READ: Final = "read"
ROLE_OPERATOR: Final = "operator"
ROLES: Final = (ROLE_READ, ROLE_OPERATOR)

# -- commands -------------------------------------------------------------------------

READ_COMMANDS: Final = ("ping", "snapshot", "info", "inspect", "mailbox", "processes")
"""Commands every authenticated session may use."""
OPERATOR_COMMANDS: Final = (
    "kill",
    "suspend",
    "resume",
    "send",
    "restart_child",
    "terminate_child",
    "trace",
    "flight_recorder",
    "dump",
)
"""Commands that change the system: offered to and accepted from operators only."""
ALL_COMMANDS: Final = READ_COMMANDS + OPERATOR_COMMANDS


DUMP_FORMAT: Final = "observer-dump"
"""The ``format`` field of a post-mortem dump file (see agent/_dump.py)."""
DUMP_VERSION: Final = 1


def commands_for(role: str) -> tuple[str, ...]:
    """The commands a role is offered (and allowed)."""
    return ALL_COMMANDS if role == ROLE_OPERATOR else READ_COMMANDS


# -- error codes ------------------------------------------------------------------------

E_BAD_FRAME: Final = "bad_frame"
"""Not a length-prefixed JSON object, or over the size limit. The connection closes."""
E_BAD_HANDSHAKE: Final = "bad_handshake"
"""Wrong message during the handshake, unsupported version, or handshake timeout."""
E_AUTH_FAILED: Final = "auth_failed"
"""Wrong or missing token (the HMAC did not verify)."""
E_UNKNOWN_COMMAND: Final = "unknown_command"
"""The command name is not one this agent knows."""
E_NOT_PERMITTED: Final = "not_permitted"
"""The session's role may not use this command."""
E_NO_SUCH_PROCESS: Final = "no_such_process"
"""The pid or name does not name a live process."""
E_BAD_ARGS: Final = "bad_args"
"""Missing or malformed command arguments."""
E_TIMEOUT: Final = "timeout"
"""The command did not finish within its time limit (the host was busy)."""
E_FAILED: Final = "failed"
"""The command ran and failed (the message says why)."""
E_BUSY: Final = "busy"
"""Too many commands in flight on this session, or too many observers attached."""


# -- message shapes (observer -> agent) ----------------------------------------------


class AuthMsg(TypedDict):
    t: Literal["auth"]
    version: int
    nonce: str
    observer: str
    role: str
    mac: str


class CommandMsg(TypedDict):
    t: Literal["cmd"]
    id: int | str
    cmd: str
    args: dict[str, Any]


# -- message shapes (agent -> observer) ------------------------------------------------


class HelloMsg(TypedDict):
    t: Literal["hello"]
    protocol: str
    versions: list[int]
    nonce: str
    agent: str
    """The agent's id (random per agent start); what the MACs bind."""


class WelcomeMsg(TypedDict):
    t: Literal["welcome"]
    version: int
    role: str
    mac: str
    session: str
    commands: list[str]
    sample_hz: float
    node: dict[str, Any]
    """The node's details (host, OS pid, Python, ...): only after authentication."""


class ReplyMsg(TypedDict, total=False):
    t: Literal["reply"]
    id: int | str
    ok: bool
    result: Any
    error: dict[str, str]


class ErrorMsg(TypedDict):
    t: Literal["error"]
    code: str
    message: str


EVENT_KINDS: Final = (
    "spawn",  # pid, name, label, parent, time; if still alive: supervisor, child_id, kind, restarts, trap_exit, budget
    "exit",  # pid, name, label, reason, reason_kind, exception, traceback, time, report (a crash report or null)
    "restart",  # supervisor, child_id, old_pid, new_pid, restarts, time
    "link",  # a, b
    "unlink",  # a, b
    "monitor",  # watcher, target, ref
    "demonitor",  # watcher, target, ref
    "register",  # name, pid (None: unregistered)
    "suspend",  # pid
    "resume",  # pid
    "gave_up",  # supervisor, child_id, restarts, intensity, period
    "update",  # pid, name, label, supervisor, child_id, kind, restarts, trap_exit, budget (all; one changed)
    "trace",  # pid, dir ("in"/"out"), to, message (redacted)
    "loop_blocked",  # pid, name, blocked_ms, stack
    "loop_unblocked",  # pid, blocked_ms
    # every event also has "time" (wall clock, seconds)
)
"""``ev`` values of ``{"t": "ev", "seq": n, "ev": kind, ...}`` messages."""

PROCESS_FIELDS: Final = (
    "pid",
    "name",
    "label",
    "kind",
    "status",
    "supervisor",
    "parent",
    "child_id",
    "restarts",
    "mailbox",
    "msgs_in",
    "msgs_out",
    "handled",
    "handler_time",
    "links",
    "monitors",
    "trap_exit",
    "started_at",
    "budget",
)
"""Fields of one process record in a snapshot (``budget`` is null except for supervisors)."""

SAMPLE_FIELDS: Final = ("pid", "mailbox", "msgs_in", "msgs_out", "handled", "handler_time", "status", "memory")
"""Columns of each row of a ``samples`` message."""


# -- handshake MACs ----------------------------------------------------------------------------


def _bound(agent_id: str, observer_id: str, channel: bytes) -> str:
    """What binds a handshake to its two peers and its connection: the agent's
    id (from ``hello``), the observer's id (from ``auth``) and the TLS channel
    binding (``tls-unique`` of this connection; empty without TLS)."""
    return f"{len(agent_id)}:{agent_id}|{len(observer_id)}:{observer_id}|{channel.hex()}"


def client_mac(
    token: bytes,
    agent_nonce: str,
    client_nonce: str,
    role: str,
    *,
    agent_id: str = "",
    observer_id: str = "",
    channel: bytes = b"",
) -> str:
    """The observer's proof that it holds ``token``, for this handshake, these
    two peers and this connection only (a relay's other connection has another
    ``channel``; another agent has another ``agent_id``)."""
    bound = _bound(agent_id, observer_id, channel)
    msg = f"{PROTOCOL}/{VERSION} auth|{agent_nonce}|{client_nonce}|{role}|{bound}".encode()
    return hmac.new(token, msg, hashlib.sha256).hexdigest()


def server_mac(
    token: bytes,
    agent_nonce: str,
    client_nonce: str,
    role: str,
    *,
    agent_id: str = "",
    observer_id: str = "",
    channel: bytes = b"",
) -> str:
    """The agent's proof that it holds ``token`` too (mutual authentication), bound like :func:`client_mac`."""
    bound = _bound(agent_id, observer_id, channel)
    msg = f"{PROTOCOL}/{VERSION} welcome|{client_nonce}|{agent_nonce}|{role}|{bound}".encode()
    return hmac.new(token, msg, hashlib.sha256).hexdigest()


def channel_binding(transport_info: Any) -> bytes:
    """The TLS channel binding of a connection (``tls-unique``), from its
    ``ssl_object`` (``writer.get_extra_info("ssl_object")``); ``b""`` without TLS."""
    if transport_info is None:
        return b""
    try:
        data = transport_info.get_channel_binding("tls-unique")
    except (ValueError, AttributeError):
        return b""
    return bytes(data or b"")


def verify(expected: str, got: object) -> bool:
    """Constant-time comparison of two MACs; False for anything not a string."""
    return isinstance(got, str) and hmac.compare_digest(expected.encode(), got.encode("utf-8", "replace"))


# -- framing ----------------------------------------------------------------------------------------


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


def _fast(obj: dict[str, Any]) -> bytes | None:
    assert _orjson is not None
    try:
        return _orjson.dumps(obj, default=str, option=_orjson.OPT_NON_STR_KEYS)
    except (TypeError, ValueError, OverflowError, RecursionError):  # an int past 64 bits, say
        return None


def encode_frame(obj: dict[str, Any], *, limit: int = MAX_OUTBOUND_FRAME, fast: bool = False) -> bytes:
    """One frame: header + compact JSON. Raises :class:`FrameError` over ``limit``.

    ``fast``: the caller vouches that ``obj`` holds no non-finite float (the
    agent's events, samples and snapshot records are built so: values from
    the running system pass the redactor, which turns them to text, and the
    agent's own numbers are finite, see ``_encode.finite``); then
    :data:`FAST_JSON` may encode it. ``orjson`` writes such a float as
    ``null``, where this function otherwise sends its text (``"inf"``)."""
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
