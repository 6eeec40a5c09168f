"""The agent <-> observer wire protocol, declared once.

``docs/protocol.md`` is the prose; this module is the code both sides use:
the constants, the error codes, the handshake's MACs and the shape of every
message (TypedDicts, declared in :mod:`agent.messages` and, for each
command's arguments and result, :mod:`agent.command_shapes`; re-exported
here). The agent builds its frames as these, the observer reads them with
:func:`read_push`, :func:`read_hello`, ... which check them at the boundary.
``docs/protocol.schema.json`` is generated from the shapes (``python -m
agent.schema``). Frames are a 4-byte big-endian length followed
by that many bytes of UTF-8 JSON, one object per frame, each with a ``t``
(type) field (the bytes: ``agent/_framing.py``, re-exported here).

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

import functools
import hashlib
import hmac
from typing import Any, Final, cast

from . import messages as M
from ._framing import E_BAD_FRAME as E_BAD_FRAME
from ._framing import HEADER as HEADER
from ._framing import MAX_INBOUND_FRAME as MAX_INBOUND_FRAME
from ._framing import MAX_OUTBOUND_FRAME as MAX_OUTBOUND_FRAME
from ._framing import FrameDecoder as FrameDecoder
from ._framing import FrameError as FrameError
from ._framing import decode_payload as decode_payload
from ._framing import encode_frame as encode_frame
from .command_shapes import *  # noqa: F403 - each command's args and result shapes
from .messages import *  # noqa: F403 - the message shapes are part of this module's surface

PROTOCOL: Final = "observer-agent"
VERSION: Final = 2
"""2: the handshake binds both peers (agent id, observer id, TLS channel) and
``hello`` carries nothing but what the handshake needs (the node's details come in ``welcome``)."""
SUPPORTED_VERSIONS: Final = (2,)

ROLE_READ: Final = "read"
ROLE_OPERATOR: Final = "operator"
ROLES: Final = (ROLE_READ, ROLE_OPERATOR)

# -- commands -------------------------------------------------------------------------

READ_COMMANDS: Final = ("ping", "snapshot", "info", "inspect", "mailbox", "processes", "trace")
"""Commands every authenticated session may use. ``trace`` only as a trace session
with limits (``id`` given: agent/_trace.py); the unbounded form is for operators."""
OPERATOR_COMMANDS: Final = (
    "kill",
    "suspend",
    "resume",
    "send",
    "restart_child",
    "terminate_child",
    "flight_recorder",
    "dump",
    "cancel",
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


EVENT_KINDS: Final = M.EVENT_KINDS
"""``ev`` values of ``{"t": "ev", "seq": n, "ev": kind, ...}`` messages (see :data:`messages.EVENTS`)."""
CHANGE_KINDS: Final = M.CHANGE_KINDS
"""What an observer tells its browsers changed: each event kind, ``reset``,
``samples``, ``gap``, ``status``, ``error`` (see :data:`messages.CHANGE_KINDS`)."""
PROCESS_FIELDS: Final = M.PROCESS_FIELDS
"""Fields of one process record in a snapshot (:class:`messages.ProcessRecord`)."""
SAMPLE_FIELDS: Final = M.SAMPLE_FIELDS
"""Columns of each row of a ``samples`` message."""


# -- reading frames at the boundary ------------------------------------------------------------------
#
# The observer checks what it reads here, once, instead of trusting raw dicts:
# the type is known and its required fields are there (a set comparison per
# frame; values are checked by the schema in the tests, not at run time).


@functools.cache
def _push_required() -> tuple[dict[str, frozenset[str]], dict[str, frozenset[str]]]:
    """The required keys of each pushed frame type and of each event kind (built
    at the first read: the agent, which only builds frames, never pays for it)."""
    push = {t: M.required_keys(M.AGENT_FRAMES[t][0]) for t in M.PUSH_TYPES if t != "ev"}
    events = {kind: M.required_keys(shape) | {"t", "seq"} for kind, shape in M.EVENTS.items()}
    return push, events


def _missing(obj: dict[str, Any], required: frozenset[str], what: str) -> None:
    if not required <= obj.keys():
        raise FrameError(f"{what} frame without {', '.join(sorted(required - obj.keys()))}")


def read_push(obj: dict[str, Any]) -> M.PushMsg:
    """A frame pushed by the agent (not a reply), checked: a known type with its
    required fields. Raises :class:`FrameError` (``bad_frame``) otherwise; an
    event of a kind this observer does not know is one, too."""
    t = obj.get("t")
    if t == "ev":
        kind = obj.get("ev")
        req = _push_required()[1].get(kind) if isinstance(kind, str) else None
        if req is None:
            raise FrameError(f"unknown event kind {str(kind)[:40]!r}")
        _missing(obj, req, f"{kind} event")
    else:
        req = _push_required()[0].get(t) if isinstance(t, str) else None
        if req is None:
            raise FrameError(f"unexpected frame type {str(t)[:40]!r}")
        _missing(obj, req, str(t))
    return cast(M.PushMsg, obj)


def read_hello(obj: dict[str, Any]) -> M.HelloMsg:
    """The agent's ``hello``, checked (an ``error`` frame is the caller's to handle first)."""
    if obj.get("t") != "hello" or obj.get("protocol") != PROTOCOL:
        raise FrameError("not an observer agent's hello", E_BAD_HANDSHAKE)
    _missing(obj, M.required_keys(M.HelloMsg), "hello")
    if not isinstance(obj["versions"], list) or not isinstance(obj["nonce"], str):
        raise FrameError("hello with malformed versions or nonce", E_BAD_HANDSHAKE)
    return cast(M.HelloMsg, obj)


def read_batch(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The events of a ``batch`` frame (:class:`agent.messages.BatchMsg`), each
    to be read like an ``ev`` frame (:func:`read_push`). Raises :class:`FrameError`
    unless ``evs`` is a list of objects."""
    evs = obj.get("evs")
    if obj.get("t") != "batch" or not isinstance(evs, list) or not all(isinstance(e, dict) for e in evs):
        raise FrameError("batch frame without a list of events")
    return evs


def read_welcome(obj: dict[str, Any]) -> M.WelcomeMsg:
    """The agent's ``welcome``, checked (the MAC is the caller's to verify)."""
    if obj.get("t") != "welcome":
        raise FrameError(f"expected welcome, got {str(obj.get('t'))[:40]!r}", E_BAD_HANDSHAKE)
    _missing(obj, M.required_keys(M.WelcomeMsg), "welcome")
    return cast(M.WelcomeMsg, obj)


def read_reply(obj: dict[str, Any]) -> M.ReplyMsg:
    """A ``reply``, checked: an ``id``, and ``result`` or ``error`` as ``ok`` says."""
    if obj.get("t") != "reply" or "id" not in obj or not isinstance(obj.get("ok"), bool):
        raise FrameError("reply without an id or ok")
    if obj["ok"]:
        _missing(obj, M.required_keys(M.ReplyOk), "reply")
    else:
        _missing(obj, M.required_keys(M.ReplyError), "reply")
        err = obj["error"]
        if not isinstance(err, dict) or not {"code", "message"} <= err.keys():
            raise FrameError("error reply without a code and message")
    return cast(M.ReplyMsg, obj)


def read_error(obj: dict[str, Any]) -> M.ErrorMsg:
    """An ``error`` frame; a malformed one still reads (as ``bad_frame``): it ends the session anyway."""
    code, message = obj.get("code"), obj.get("message")
    return {
        "t": "error",
        "code": code if isinstance(code, str) else E_BAD_FRAME,
        "message": message if isinstance(message, str) else "malformed error frame",
    }


def read_dial(obj: dict[str, Any]) -> M.DialMsg:
    """The first frame of an agent that dialled in, checked."""
    name = obj.get("name")
    if obj.get("t") != "dial" or obj.get("protocol") != PROTOCOL or not isinstance(name, str):
        raise FrameError("expected a dial frame naming the node", E_BAD_HANDSHAKE)
    return cast(M.DialMsg, obj)


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


def channel_binding(ssl_object: Any) -> bytes:
    """The TLS channel binding of a connection (``tls-unique``), from its
    ``ssl_object`` (``writer.get_extra_info("ssl_object")``); ``b""`` without TLS."""
    if ssl_object is None:
        return b""
    try:
        data = ssl_object.get_channel_binding("tls-unique")
    except (ValueError, AttributeError):
        return b""
    return bytes(data or b"")


def verify(expected: str, got: object) -> bool:
    """Constant-time comparison of two MACs; False for anything not a string."""
    return isinstance(got, str) and hmac.compare_digest(expected.encode(), got.encode("utf-8", "replace"))
