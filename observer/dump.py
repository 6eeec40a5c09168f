"""A post-mortem dump served in the usual UI, as a frozen node (``observer open DUMP``).

The dump (written by the agent, see ``agent/_dump.py`` and docs/protocol.md)
is read once; its processes feed a :class:`NodeModel` exactly as an agent's
snapshot would (``snapshot_begin`` / ``snapshot_chunk`` / ``snapshot_end``),
and the model is then marked down with the reason ``post-mortem dump``: the
pages show the last picture, read-only. The dump's crash reports go through
the history store like live ones, so ``/crashes`` and ``/crash/<id>`` show
them. A :class:`FrozenAttachment` stands in for the attachment: there is no
agent, so every command answers ``not_connected``.

Threading rules
    Everything is built before the server starts; afterwards the model is
    only read.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable
from typing import Any

from agent import protocol as P
from agent.client import AgentError

from .attach import E_NOT_CONNECTED, AttachManager
from .model import Change, NodeModel
from .store import HistoryStore

__all__ = ["FrozenAttachment", "install", "load", "model_from_dump"]

FROZEN_REASON = "post-mortem dump (frozen: no agent)"


def load(path: str) -> dict[str, Any]:
    """Read a dump (JSON, gzip or not); ``ValueError`` with a clear message if
    it is not one this observer reads."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        data = json.loads(raw.decode("utf-8"))
    except (OSError, EOFError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path} is not a post-mortem dump (unreadable JSON: {type(exc).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != P.DUMP_FORMAT:
        raise ValueError(f'{path} is not a post-mortem dump (no "format": "{P.DUMP_FORMAT}")')
    if data.get("version") != P.DUMP_VERSION:
        raise ValueError(f"{path}: dump version {data.get('version')!r} is not supported (this observer reads 1)")
    if not isinstance(data.get("processes"), list) or not all(isinstance(p, dict) for p in data["processes"]):
        raise ValueError(f"{path}: the dump has no process list")
    return data


def _snapshot_msgs(data: dict[str, Any]) -> list[dict[str, Any]]:
    procs = [{k: v for k, v in p.items() if k not in ("path", "stack")} for p in data["processes"]]
    return [
        {"t": "snapshot_begin", "seq": 0, "count": len(procs), "node": data.get("node") or {}},
        {"t": "snapshot_chunk", "seq": 0, "procs": procs},
        {"t": "snapshot_end", "seq": 0, "names": data.get("names") or {}},
    ]


def _crash_events(data: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for i, rep in enumerate(data.get("crashes") or []):
        if not isinstance(rep, dict):
            continue
        out.append(
            {
                "t": "ev",
                "seq": i + 1,
                "ev": "exit",
                "pid": rep.get("pid"),
                "name": rep.get("name"),
                "label": rep.get("label"),
                "reason": rep.get("reason"),
                "reason_kind": "exception" if rep.get("exception") else "other",
                "exception": rep.get("exception"),
                "traceback": rep.get("traceback"),
                "time": rep.get("time") or data.get("time"),
                "report": rep,
            }
        )
    return out


def model_from_dump(name: str, data: dict[str, Any]) -> NodeModel:
    """A model holding the dump's picture, marked down (frozen)."""
    model = NodeModel(name)
    model.connected({"node": data.get("node") or {}}, None)
    for m in _snapshot_msgs(data):
        model.apply(m)
    model.disconnected(FROZEN_REASON)
    return model


class FrozenAttachment:
    """Stands in for :class:`observer.attach.Attachment`: a picture, no agent."""

    def __init__(self, name: str, path: str, data: dict[str, Any], store: HistoryStore | None) -> None:
        self.name = name
        self.address = f"dump:{os.path.basename(path)}"
        self.path = path
        self.role = P.ROLE_READ
        self.model = model_from_dump(name, data)
        self.store = store
        self.client = None
        self.dump_reason = str(data.get("reason") or "")
        self.dump_time = data.get("time")
        self.last_error = FROZEN_REASON

    @property
    def status(self) -> str:
        return "dump"

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": self.address,
            "role": self.role,
            "tls": False,
            "status": "dump",
            "frozen": True,
            "dump": {"path": self.path, "reason": self.dump_reason, "time": self.dump_time},
            "last_error": FROZEN_REASON,
            "attempts": 0,
            "connects": 0,
            "connected_since": None,
            "commands": [],
            "session": None,
        }

    def _refuse(self) -> AgentError:
        return AgentError(E_NOT_CONNECTED, f"{self.name} is a post-mortem dump: there is no agent to ask")

    def command(self, cmd: str, timeout: float = 10.0, **args: Any) -> Any:
        raise self._refuse()

    async def acommand(self, cmd: str, *, timeout: float = 10.0, **args: Any) -> Any:
        raise self._refuse()

    def run_audited(self, cmd: str, **kwargs: Any) -> Any:
        raise self._refuse()

    def kill_preview(self, pid: str, reason: str = "kill", **kwargs: Any) -> dict[str, Any]:
        return self.model.kill_preview(pid, reason)

    def on_change(self, callback: Callable[[list[Change]], None]) -> Callable[[], None]:
        return lambda: None

    def start(self, loop: Any = None) -> None:
        pass

    def stop(self, timeout: float = 10.0) -> None:
        pass


def install(manager: AttachManager, store: HistoryStore | None, path: str, name: str | None = None) -> FrozenAttachment:
    """Load ``path`` and add it to ``manager`` as a frozen node (its crash
    reports and picture recorded in ``store``). Raises ``ValueError``."""
    data = load(path)
    key = name or f"dump-{data.get('node', {}).get('node_id', 0)}-{data.get('node', {}).get('os_pid', 0)}"
    att = FrozenAttachment(key, path, data, store)
    if store is not None:
        for m in _snapshot_msgs(data) + _crash_events(data):
            store.record(key, m)
    manager.adopt(att)
    return att
