"""Commands to an attached agent: from the loop, from any other thread, audited, and the
kill preview that refreshes what the stream does not carry.

Threading rules
    :meth:`Commands.acommand` runs on the attach loop; :meth:`Commands.command`,
    :meth:`Commands.run_audited` and :meth:`Commands.kill_preview` from any thread
    *except* the loop's (they block on it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

from agent import protocol as P
from agent.client import AgentClient, AgentError

from ..model import NodeModel
from ..store import HistoryStore
from ._common import E_NOT_CONNECTED, call_on

__all__ = ["Commands"]


class Commands:
    """The command half of :class:`observer.attach.Attachment` (which sets these attributes)."""

    name: str
    model: NodeModel
    store: HistoryStore | None
    client: AgentClient | None
    last_error: str | None
    _loop: asyncio.AbstractEventLoop | None

    @property
    def status(self) -> str:
        """``connecting``, ``syncing``, ``up`` or ``down`` (the model's)."""
        return self.model.status

    async def acommand(self, cmd: str, *, timeout: float = 10.0, **args: Any) -> Any:
        """Run a command on the loop thread; raises :class:`AgentError`
        (code :data:`E_NOT_CONNECTED` when detached)."""
        client = self.client
        if client is None or client.closed.is_set():
            raise AgentError(E_NOT_CONNECTED, f"{self.name} is not attached ({self.last_error or self.status})")
        return await client.command(cmd, timeout=timeout, **args)

    def command(self, cmd: str, timeout: float = 10.0, **args: Any) -> Any:
        """Run a command from any thread (but the loop's); returns its result or
        raises :class:`AgentError` (``timeout`` if no reply in time)."""
        if self._loop is None:
            raise AgentError(E_NOT_CONNECTED, "not started")
        try:
            return call_on(self._loop, self._command_timed(cmd, timeout, args), timeout + 5.0)
        except concurrent.futures.TimeoutError:
            raise AgentError(P.E_TIMEOUT, f"no reply to {cmd} within {timeout}s") from None

    async def _command_timed(self, cmd: str, timeout: float, args: dict[str, Any]) -> Any:
        try:
            return await self.acommand(cmd, timeout=timeout, **args)
        except TimeoutError:
            raise AgentError(P.E_TIMEOUT, f"no reply to {cmd} within {timeout}s") from None

    def run_audited(
        self,
        cmd: str,
        *,
        who: str | None,
        from_addr: str | None,
        timeout: float = 10.0,
        **args: Any,
    ) -> Any:
        """:meth:`command`, with an audit row written *before* it runs (operator
        commands) and its outcome recorded after. Raises
        :class:`observer.store.AuditError` (and does nothing) if the audit row
        cannot be written, :class:`AgentError` if the command fails."""
        audit_id: int | None = None
        if self.store is not None and cmd in P.OPERATOR_COMMANDS:
            target = args.get("pid") or args.get("to") or args.get("supervisor")
            audit_id = self.store.audit(who, from_addr, cmd, str(target) if target else None, args, node=self.name)
        try:
            result = self.command(cmd, timeout=timeout, **args)
        except AgentError as exc:
            if audit_id is not None and self.store is not None:
                self.store.audit_result(audit_id, {"error": exc.code, "message": exc.message}, ok=False)
            raise
        if audit_id is not None and self.store is not None:
            self.store.audit_result(audit_id, result, ok=True)
        return result

    def kill_preview(
        self, pid: str, reason: str = "kill", *, refresh: bool = True, timeout: float = 3.0
    ) -> dict[str, Any]:
        """:meth:`NodeModel.kill_preview`, after refreshing (best effort) what the
        stream does not carry: the budgets and child order of the supervisors
        above ``pid`` and the trap_exit flags of its links (``inspect``/``info``)."""
        notes: list[str] = []
        if refresh and self.client is not None:
            detail = self.model.process(pid)
            if detail is not None:
                sups = [p for p in detail["path"] if p != pid][-8:]
                if detail.get("kind") == "supervisor":
                    sups.append(pid)
                # trap_exit changes at run time (a body sets it when it starts) and
                # the stream reports it only with the next sample: ask for all links
                unknown = list(detail["links"])[:50]
                unknown.append(pid)
                for p in sups:
                    try:
                        self.model.merge_info(p, self.command("inspect", timeout=timeout, pid=p, mailbox_limit=0))
                    except AgentError as exc:
                        notes.append(f"could not refresh {p}: {exc.code}")
                for p in unknown:
                    try:
                        self.model.merge_info(p, self.command("info", timeout=timeout, pid=p))
                    except AgentError as exc:
                        notes.append(f"could not refresh {p}: {exc.code}")
                # links that arrived while we asked: their flags too, once
                again = self.model.process(pid)
                for p in list(again["links"] if again else ())[:50]:
                    if p not in unknown:
                        try:
                            self.model.merge_info(p, self.command("info", timeout=timeout, pid=p))
                        except AgentError as exc:
                            notes.append(f"could not refresh {p}: {exc.code}")
        out = self.model.kill_preview(pid, reason)
        out.setdefault("warnings", []).extend(notes)
        return out
