"""The MCP tools' work, apart from the SDK: plain functions over the observer's state.

Each read tool calls the same read API the web pages use (the node models
through :class:`observer.app.ObserverState`, the history store, the crash
groups); each destructive tool goes through the same gates as the UI's
actions: the caller's grant must include the action, the server must have
destructive actions on, and the command is written to the audit log before
it runs (:meth:`observer.attach.Attachment.run_audited`). A refusal is
audited too, and raised as :class:`ToolRefused`.

Threading rules
    Blocking: commands to agents wait for their reply (a few seconds at
    most). The SDK glue (:mod:`observer.mcp.server`) runs them on a worker
    thread, never on its event loop.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from agent import protocol as P
from agent.client import AgentError

from ..permissions import DESTRUCTIVE, Grant, action_of
from ..store import AuditError

__all__ = ["DESTRUCTIVE_TOOLS", "READ_TOOLS", "Caller", "ToolRefused", "Tools"]

log = logging.getLogger("observer.mcp")

READ_TOOLS = (
    "nodes",
    "tree",
    "find_processes",
    "process_info",
    "crash_groups",
    "crash_report",
    "events",
    "kill_preview",
)
DESTRUCTIVE_TOOLS = ("kill", "suspend", "resume", "send")


class ToolRefused(Exception):
    """A tool call that is not allowed or cannot be carried out (the message says why)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Caller:
    """Who calls: the grant of the token they authenticated with."""

    grant: Grant
    """Role and actions (:mod:`observer.permissions`)."""
    where: str
    """``mcp-stdio`` or ``mcp-http``: the audit log's "from"."""

    @property
    def who(self) -> str:
        return f"{self.grant.name or 'anonymous'}/mcp"


def _limit(value: int, low: int, high: int, name: str) -> int:
    if not low <= value <= high:
        raise ToolRefused("bad_args", f"{name} must be between {low} and {high}")
    return value


def _time(value: float | None, name: str) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ToolRefused("bad_args", f"{name} must be a finite Unix time")
    return value


class Tools:
    """The tools over one :class:`observer.app.ObserverState` (typed loosely: any object
    with ``nodes()``, ``attachment(name)``, ``store`` and ``allow_destructive``)."""

    def __init__(self, state: Any) -> None:
        self.state = state

    # -- reads ------------------------------------------------------------------------------------

    def nodes(self) -> list[dict[str, Any]]:
        out = []
        for name in self.state.nodes():
            att = self.state.attachment(name)
            if att is None:
                continue
            s = att.model.summary()
            out.append(
                {k: s.get(k) for k in ("name", "status", "process_count", "supervisor_count", "loop_lag_ms",
                                       "message_rate", "restart_rate", "restarts", "crashes", "last_seen")}
            )  # fmt: skip
        return out

    def _att(self, node: str) -> Any:
        att = self.state.attachment(node)
        if att is None:
            raise ToolRefused("unknown_node", f"no node {node!r}; see the nodes tool")
        return att

    def _pid(self, node: str, pid: str) -> tuple[Any, str]:
        att = self._att(node)
        model = att.model
        raw = pid if pid.startswith("<") else f"<{pid}>"
        if raw in model:
            return att, raw
        named = model.names().get(pid)
        if named is not None and named in model:
            return att, str(named)
        for hit in model.search(pid, limit=20):
            if hit["name"] == pid:
                return att, str(hit["pid"])
        raise ToolRefused("unknown_pid", f"no process {pid!r} on {node}")

    def tree(self, node: str, group_threshold: int = 20) -> dict[str, Any]:
        att = self._att(node)
        return dict(att.model.tree(group_threshold=_limit(group_threshold, 1, 100_000, "group_threshold")))

    def find_processes(self, node: str, query: str, limit: int = 50) -> list[dict[str, Any]]:
        att = self._att(node)
        return list(att.model.search(query, limit=_limit(limit, 1, 1000, "limit")))

    def process_info(self, caller: Caller, node: str, pid: str) -> dict[str, Any]:
        att, p = self._pid(node, pid)
        inspect: Any = None
        inspect_error = None
        if "inspect" in caller.grant.actions:
            try:  # the agent redacts the state before it leaves the node
                inspect = att.command("inspect", timeout=5.0, pid=p, mailbox_limit=10)
                if isinstance(inspect, dict):
                    att.model.merge_info(p, inspect)
            except AgentError as exc:
                inspect_error = {"error": exc.code, "message": exc.message}
        else:
            inspect_error = {"error": P.E_NOT_PERMITTED, "message": "this token does not allow inspect"}
        record = att.model.process(p)
        if record is None:
            raise ToolRefused("unknown_pid", f"process {p} exited")
        return {"node": node, "pid": p, "process": record, "inspect": inspect, "inspect_error": inspect_error}

    def crash_groups(self, node: str | None = None, query: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        return list(self.state.store.crash_groups(node=node, q=query, limit=_limit(limit, 1, 1000, "limit")))

    def crash_report(self, report_id: int) -> dict[str, Any]:
        found = self.state.store.crash(report_id)
        if found is None:
            raise ToolRefused("unknown_report", f"no crash report {report_id}")
        return found

    def events(
        self,
        node: str | None = None,
        since: float | None = None,
        until: float | None = None,
        kinds: list[str] | None = None,
        query: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        return list(
            self.state.store.events(
                node=node,
                kinds=kinds,
                q=query,
                since=_time(since, "since"),
                until=_time(until, "until"),
                limit=_limit(limit, 1, 5000, "limit"),
            )
        )

    def kill_preview(self, node: str, pid: str, reason: str = "kill") -> dict[str, Any]:
        att, p = self._pid(node, pid)
        return dict(att.kill_preview(p, reason))

    # -- destructive ------------------------------------------------------------------------------

    def act(self, caller: Caller, command: str, node: str, pid: str, **args: Any) -> Any:
        """Carry out ``command`` (kill, suspend, resume, send) on ``pid`` after the checks."""
        action = action_of(command)
        assert action in DESTRUCTIVE
        att, p = self._pid(node, pid)
        full = {("to" if command == "send" else "pid"): p, **args}
        if action not in caller.grant.actions:
            self._refuse(caller, command, node, p, full, "not_permitted", f"this token does not allow {action}")
        if not self.state.allow_destructive:
            self._refuse(caller, command, node, p, full, "destructive_actions_disabled", "destructive actions are off")
        try:
            return att.run_audited(command, who=caller.who, from_addr=caller.where, **full)
        except AuditError as exc:
            raise ToolRefused("audit_unavailable", str(exc)) from None
        except AgentError as exc:
            raise ToolRefused(exc.code, exc.message) from None

    def _refuse(
        self, caller: Caller, command: str, node: str, pid: str, args: dict[str, Any], code: str, message: str
    ) -> None:
        log.warning("observer: mcp: refused %s of %s on %s for %s: %s", command, pid, node, caller.who, message)
        try:
            aid = self.state.store.audit(caller.who, caller.where, command, pid, args, node=node)
            self.state.store.audit_result(aid, {"error": code, "message": message}, ok=False)
        except AuditError:
            log.error("observer: mcp: could not audit the refusal of %s on %s", command, pid)
        raise ToolRefused(code, message)
