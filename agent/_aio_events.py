"""The asyncio source's events (a mixin of
:class:`agent._aio_source.AsyncioSource`): what the host hooks queued, turned
into wire events on the agent's thread -- spawns, exits with their crash
reports, errors the loop's exception handler saw or that were logged, and a
loop replaced by the next one.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import actors

from . import _aio_inspect as ins
from ._aio_records import ScopeRec, TaskRec, _meta, _scope_over, _where

if TYPE_CHECKING:
    from ._agent import Agent


class TaskEvents:
    """Needs the source's records, scopes and publishing."""

    loop: asyncio.AbstractEventLoop
    live: dict[int, TaskRec]
    scopes: dict[int, ScopeRec]
    shown: dict[str, tuple[str | None, str | None]]
    root_key: str
    crashes_total: int
    _fresh: deque[TaskRec]
    on_node: Callable[[actors.Node], None] | None

    if TYPE_CHECKING:

        def _look_for_node(self, rec: TaskRec) -> None: ...

        def _ag(self) -> Agent: ...

        def _key(self) -> str: ...

        def _publish(self, d: dict[str, Any]) -> None: ...

        def _place(self, rec: TaskRec) -> None: ...

        def _draw_early(self, rec: TaskRec | None) -> None: ...

        def _close_scope(self, scope: ScopeRec, publish: bool, reason: str = "normal") -> None: ...

        def _end_timeouts_of(self, rec: TaskRec, publish: bool) -> None: ...

        def _loop_label(self) -> str: ...

    def encode(self, ev: Any) -> dict[str, Any] | None:
        kind = ev[0]
        if kind == "spawn":
            rec: TaskRec = ev[1]
            rec.lazy = False  # first: from here on the host tells its end (see HostHooks._on_done)
            if rec.spawned:
                return None  # drawn early, with a crash or a failed sibling (see _draw_early)
            if rec.sup is None:  # else placed by a snapshot: sessions attached before it are told now
                task = rec()
                if (task is None or task.done()) and not rec.flush:
                    # it ended before the agent looked (within LAZY_DELAY): counted in the
                    # node's figures, drawn only if it failed or a member of its group did
                    return None
                self._place(rec)
            rec.spawned = time.monotonic()
            self._fresh.append(rec)
            return self._spawn_dict(rec)
        if kind == "exit":
            rec = ev[1]
            if rec.sup is None and ev[3] is None and not rec.flush:
                rec.ended = True  # ended before the agent drew it (the usual short task): nothing to tell
                return None
            return self._exit(rec, ev[2], ev[3], ev[4], publish=True)
        if kind == "loop_exc":
            return self._loop_exception(ev[1], ev[2], ev[3], publish=True)
        if kind == "logged":
            return self._loop_exception(ev[3], ev[2], ev[4], publish=True, task=ev[1])
        if kind == "loop":
            return self._loop_changed(ev[1])
        return None

    def account(self, ev: Any) -> None:
        kind = ev[0]
        if kind == "spawn":
            ev[1].lazy = False  # (as in encode)
            if self.on_node is not None:
                self._look_for_node(ev[1])
        elif kind == "exit":
            rec = ev[1]
            if rec.sup is None and ev[3] is None and not rec.flush:
                rec.ended = True  # (as in encode)
            else:
                self._exit(rec, ev[2], ev[3], ev[4], publish=False)
        elif kind == "loop_exc":
            self._loop_exception(ev[1], ev[2], ev[3], publish=False)
        elif kind == "logged":
            self._loop_exception(ev[3], ev[2], ev[4], publish=False, task=ev[1])
        elif kind == "loop":
            self._loop_changed(ev[1], publish=False)

    def _spawn_dict(self, rec: TaskRec) -> dict[str, Any]:
        return {
            "ev": "spawn",
            "pid": rec.key,
            "name": rec.name,
            "label": rec.coro,
            "parent": rec.parent,
            "time": rec.created,
            **_meta(rec.sup, "task"),
            "coro": rec.coro,
            "created_at": _where(rec.where),
            "origin": rec.origin,
        }

    def _exit(
        self, rec: TaskRec, state: str, exc: BaseException | None, when: float, *, publish: bool
    ) -> dict[str, Any] | None:
        ag = self._ag()
        if publish and rec.sup is None and (exc is not None or rec.flush):
            # ended before the agent drew it: drawn now, to carry its crash (or its
            # cancellation by a failed sibling)
            self._draw_early(rec)
        rec.ended = True
        if type(rec.group) is not weakref.ReferenceType:
            rec.group = None  # held for its failure (HostHooks._flush_group): drawn now
        placed = rec.sup is not None
        report = None
        if exc is not None:
            self.crashes_total += 1
            if not publish:  # else counted by Agent._publish
                ag.crashes += 1
            report = self._report(rec, exc, when)
            ag.crash_log.ring.append(cast(Any, report))
            ag.crash_log.total += 1
        self.shown.pop(rec.key, None)
        self._end_timeouts_of(rec, publish)
        scope = rec.scope
        if scope is not None:
            scope.children -= 1
            if scope.children <= 0 and _scope_over(scope):
                self._close_scope(scope, publish)
        if not (publish and placed):
            return None
        reason = {"done": "normal", "cancelled": "cancelled", "destroyed": "destroyed while pending"}.get(state)
        return {
            "ev": "exit",
            "pid": rec.key,
            "name": rec.name,
            "label": rec.coro,
            "reason": report["reason"] if report is not None else reason,
            "reason_kind": "exception" if exc is not None else ("normal" if state == "done" else "shutdown"),
            "exception": type(exc).__name__ if exc is not None else None,
            "traceback": report["traceback"] if report is not None else None,
            "time": when,
            "report": report,
            "state": state,
        }

    def _ancestry(self, key: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        k: str | None = key
        while k is not None and len(out) < 64:
            ent = self.shown.get(k)
            out.append({"pid": k, "name": ent[1] if ent else None})
            k = ent[0] if ent else None
        if out[-1]["pid"] != self.root_key:
            out.append({"pid": self.root_key, "name": "loop"})
        out.reverse()
        return out

    def _report(self, rec: TaskRec, exc: BaseException, when: float) -> dict[str, Any]:
        ag = self._ag()
        return ins.crash_report(
            exc,
            pid=rec.key,
            name=rec.name,
            label=rec.coro,
            when=when,
            kind="task",
            supervisor=rec.sup,
            ancestry=self._ancestry(rec.key),
            policy=ag.policy,
            extra={"coro": rec.coro, "created_at": _where(rec.where), "parent": rec.parent, "steps": rec.steps},
        )

    def _loop_exception(
        self, message: str | None, exc: BaseException, when: float, *, publish: bool, task: TaskRec | None = None
    ) -> dict[str, Any] | None:
        """An error seen outside a task's own end: one the loop's exception
        handler saw (a callback's, a protocol's: kind ``callback``, under the
        loop), or one logged with its exception on the loop (kind ``logged``,
        under the task that logged it). It becomes the crash of a short-lived
        node, so it is listed, grouped and kept like any crash."""
        ag = self._ag()
        self.crashes_total += 1
        if not publish:  # else counted by Agent._publish
            ag.crashes += 1
        key = self._key()
        kind = "callback" if task is None else "logged"
        if publish and task is not None and task.sup is None:
            # the task that logged it was not drawn yet (it is short): draw it, to hang the crash on
            self._draw_early(task)
        sup = task.key if task is not None and task.key in self.shown else self.root_key
        label = (message or "exception in the event loop")[:120]
        report = ins.crash_report(
            exc,
            pid=key,
            name=None,
            label=label,
            when=when,
            kind=kind,
            supervisor=sup,
            ancestry=[*self._ancestry(sup), {"pid": key, "name": None}],
            policy=ag.policy,
            extra={"message_text": message, "task": None if task is None else task.key},
        )
        ag.crash_log.ring.append(cast(Any, report))
        ag.crash_log.total += 1
        if not publish:
            return None
        self._publish(
            {"ev": "spawn", "pid": key, "name": None, "label": label, "parent": None, "time": when} | _meta(sup, kind)
        )
        return {
            "ev": "exit",
            "pid": key,
            "name": None,
            "label": label,
            "reason": report["reason"],
            "reason_kind": "exception",
            "exception": type(exc).__name__,
            "traceback": report["traceback"],
            "time": when,
            "report": report,
        }

    def _loop_changed(self, old_root: str, *, publish: bool = True) -> dict[str, Any] | None:
        """The loop was replaced: what was left of the old one is gone."""
        for k, rec in list(self.live.items()):
            if rec.root == old_root:
                self.live.pop(k, None)
                self._exit(rec, "destroyed", None, time.time(), publish=publish)
        for s in list(self.scopes.values()):
            if s.root == old_root:
                self._close_scope(s, publish)
        self.shown.pop(old_root, None)
        if not publish:
            return None
        now = time.time()
        self._publish(
            {
                "ev": "exit",
                "pid": old_root,
                "name": "loop",
                "label": "loop closed",
                "reason": "normal",
                "reason_kind": "normal",
                "exception": None,
                "traceback": None,
                "time": now,
                "report": None,
            }
        )
        self.shown[self.root_key] = (None, "loop")
        return {
            "ev": "spawn",
            "pid": self.root_key,
            "name": "loop",
            "label": self._loop_label(),
            "parent": None,
            "time": now,
            **_meta(None, "loop"),
        }
