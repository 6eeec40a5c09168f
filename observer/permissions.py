"""Who may do what: login tokens with a role and per-action permissions.

A login token file holds one token per line, optionally with its grant::

    # TOKEN [role=read|operator] [actions=inspect,kill,suspend,send,chaos,trace] [name=LABEL]
    3kq...  role=operator actions=kill,suspend name=alice
    Zx9...  role=read name=dashboard

A file with one bare token (the single-token form of ``--login-token-file``
and ``OBSERVER_LOGIN_TOKEN``) grants the operator role with every action.
``role=read`` allows ``inspect`` only (and can be narrowed to nothing with
``actions=``, or given ``trace``: message traces within limits, not
destructive); ``role=operator`` allows every action unless ``actions=``
lists fewer, and is the only role that may add or remove nodes.

The grant is stored in the signed session cookie at login. Every request
that acts checks it again on the server (:func:`permitted`); a refusal is
logged, written to the audit log and answered with 403 ``not_permitted``
(:func:`observer.views.common.refuse`). Destructive actions still need
``--allow-destructive-actions`` on the server as well.

Threading rules
    Pure functions over the request's session; they run on the request's thread.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from flask import current_app, session

__all__ = [
    "ACTIONS",
    "DESTRUCTIVE",
    "Grant",
    "action_of",
    "granted_actions",
    "is_operator",
    "match",
    "parse_login_tokens",
    "permitted",
    "who",
]

log = logging.getLogger("observer.permissions")

ACTIONS = ("inspect", "kill", "suspend", "send", "chaos", "trace")
"""Every action a login token can be granted."""
DESTRUCTIVE = frozenset({"kill", "suspend", "send", "chaos"})
"""Actions that also need ``--allow-destructive-actions`` on the server."""
ROLE_READ = "read"
ROLE_OPERATOR = "operator"
_COMMAND_ACTION = {
    "kill": "kill",
    "cancel": "kill",  # an asyncio node's kill: cancel a task
    "suspend": "suspend",
    "resume": "suspend",
    "send": "send",
    "inspect": "inspect",
}


@dataclass(frozen=True, slots=True)
class Grant:
    """One login token and what it allows."""

    token: str = field(repr=False)
    """The secret (compared in constant time)."""
    role: str = ROLE_OPERATOR
    """``read`` or ``operator``."""
    actions: frozenset[str] = frozenset(ACTIONS)
    """The actions allowed (a subset of :data:`ACTIONS`)."""
    name: str = ""
    """A label for the audit log (``who``); never the token."""


def parse_login_tokens(text: str) -> tuple[Grant, ...]:
    """Parse a login token file (see the module docstring); raises ValueError with the line number."""
    grants: list[Grant] = []
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip() if raw.lstrip().startswith("#") else raw.strip()
        if not line:
            continue
        token, *opts = line.split()
        fields: dict[str, str] = {}
        for opt in opts:
            key, sep, value = opt.partition("=")
            if not sep or key not in ("role", "actions", "name"):
                raise ValueError(f"line {no}: expected role=, actions= or name=, not {opt!r}")
            fields[key] = value
        role = fields.get("role", ROLE_OPERATOR)
        if role not in (ROLE_READ, ROLE_OPERATOR):
            raise ValueError(f"line {no}: role must be read or operator, not {role!r}")
        if "actions" in fields:
            actions = frozenset(a for a in fields["actions"].split(",") if a)
            unknown = actions - set(ACTIONS)
            if unknown:
                bad = ", ".join(sorted(unknown))
                raise ValueError(f"line {no}: unknown action(s) {bad}; one of {', '.join(ACTIONS)}")
        else:
            actions = frozenset(ACTIONS) if role == ROLE_OPERATOR else frozenset({"inspect"})
        if role == ROLE_READ and actions & DESTRUCTIVE:
            raise ValueError(f"line {no}: a read-only token cannot have {', '.join(sorted(actions & DESTRUCTIVE))}")
        if len(token) < 8:
            raise ValueError(f"line {no}: token too short (at least 8 characters)")
        grants.append(Grant(token, role, actions, fields.get("name") or f"{role}-{len(grants) + 1}"))
    if not grants:
        raise ValueError("no login token in the file")
    if len({g.token for g in grants}) != len(grants):
        raise ValueError("the same token appears twice")
    return tuple(grants)


def match(grants: Iterable[Grant], given: Any) -> Grant | None:
    """The grant whose token is ``given`` (every token compared, in constant time)."""
    if not isinstance(given, str):
        return None
    found = None
    for g in grants:
        if hmac.compare_digest(given.encode(), g.token.encode()):
            found = g
    return found


def action_of(command: str) -> str:
    """The permission an agent command needs (``resume`` goes with ``suspend``, ``cancel`` with ``kill``)."""
    return _COMMAND_ACTION.get(command, command)


def who() -> str:
    """The audit log's "who": the token's label and the session id."""
    return f"{session.get('who') or 'anonymous'}/{session.get('sid') or '-'}"


def is_operator() -> bool:
    return session.get("role") == ROLE_OPERATOR


def granted_actions() -> list[str]:
    """The actions this session may use now (destructive ones only if the server allows them)."""
    allow = bool(current_app.extensions["observer"].allow_destructive)
    have = set(session.get("actions") or ())
    return [a for a in ACTIONS if a in have and (allow or a not in DESTRUCTIVE)]


def permitted(action: str) -> bool:
    """Whether this session's grant includes ``action`` (not the server-wide gate)."""
    return action in (session.get("actions") or ())
