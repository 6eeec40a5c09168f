"""Mixed programs: an ``actors`` node running inside an asyncio application,
seen in one picture::

    from agent.mixed import MixedSource
    agent.start(MixedSource(node), "127.0.0.1:4711", token=token)

:class:`MixedSource` is the node's :class:`ActorsSource` (its supervision
tree, every actors command) plus an asyncio source on the same loop for the
application's other tasks (:class:`_AppTasks`): the loop, its tasks,
TaskGroups and gathers, drawn next to the node's supervisors, with the same
crash reports as a plain asyncio node. Tasks that run an actors process's
body are recognised (:func:`actors.process_task` / :func:`actors.task_process`)
and left to the actors source: they are the node's processes, not drawn
twice; a task a process creates is drawn under that process.

Task pids have their own first number (:data:`TASKS_NODE`) so they never
collide with the node's process pids. The handshake says ``actors`` (what
the observer offers follows the node) and adds ``include_tasks: true``; the
commands are the node's plus ``cancel`` for tasks.

Threads: as for both sources (see ``agent/_source.py``).
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any

import actors

from ._aio_records import TaskRec
from ._aio_source import AsyncioSource
from ._source import ActorsSource

if TYPE_CHECKING:
    from ._agent import Agent
    from ._commands import Commands
    from ._session import Session
    from ._source import Handler

__all__ = ["TASKS_NODE", "MixedSource"]

TASKS_NODE = 9000
"""The first number of the application tasks' pids (``<9000.N.0>``)."""
_ACTORS_DIR = os.path.dirname(actors.__file__) + os.sep


class _AppTasks(AsyncioSource):
    """The application's tasks around a node: an asyncio source that leaves
    the node's process tasks to the actors source."""

    def __init__(self, loop: asyncio.AbstractEventLoop, node: actors.Node) -> None:
        self.node = node
        self._proc_of: dict[int, str] = {}
        """id(task) -> pid of the actors processes' tasks met so far (agent thread)."""
        self._alias: dict[str, str] = {}
        """Task key -> actors pid, for those tasks: a task they create is drawn under the process."""
        super().__init__(loop)
        self.node_id = TASKS_NODE

    def _key(self) -> str:
        return f"<{TASKS_NODE}.{next(self._ids)}.0>"

    def _process_pid(self, rec: TaskRec) -> str | None:
        """The actors pid whose body runs in ``rec``'s task, or None (agent thread)."""
        if rec.key in self._alias:
            return self._alias[rec.key]
        task = rec.ref()
        if task is None:
            return None
        pid = self._proc_of.get(id(task))
        if pid is None and (rec.where is None or rec.where[0].startswith(_ACTORS_DIR)):
            # created by the runtime (or adopted, creator unknown): ask the node (a walk over its
            # processes, only for these)
            p = actors.task_process(self.node, task)
            pid = str(p.pid) if p is not None else None
        if pid is not None:
            self._alias[rec.key] = pid
        return pid

    def _forget(self, rec: TaskRec) -> None:
        self._alias.pop(rec.key, None)
        t = rec.ref()
        if t is not None:
            self._proc_of.pop(id(t), None)

    def _refresh(self) -> None:
        """Every process's task, at once (snapshots)."""
        out: dict[int, str] = {}
        for p in self.node.iter_processes():
            t = actors.process_task(p)
            if t is not None:
                out[id(t)] = str(p.pid)
        self._proc_of = out

    def _place(self, rec: TaskRec) -> None:
        super()._place(rec)
        if rec.scope is None and rec.parent is not None and rec.parent in self._alias:
            rec.sup = self._alias[rec.parent]  # created by a process: drawn under it
            self.shown[rec.key] = (rec.sup, rec.name)

    def encode(self, ev: Any) -> dict[str, Any] | None:
        kind = ev[0]
        if kind == "spawn" and self._process_pid(ev[1]) is not None:
            return None  # the actors source draws it
        if kind == "exit" and ev[1].key in self._alias:
            self._forget(ev[1])
            return None  # a process's end: the actors source reports it
        return super().encode(ev)

    def account(self, ev: Any) -> None:
        if ev[0] == "exit" and ev[1].key in self._alias:
            self._forget(ev[1])
            return
        super().account(ev)

    def count(self) -> int:
        return max(0, len(self.live) - len(self._alias))

    def units(self) -> list[Any]:
        self._refresh()
        out = []
        for u in super().units():
            if isinstance(u, TaskRec):
                t = u.ref()
                pid = self._proc_of.get(id(t)) if t is not None else None
                if pid is not None:
                    self._alias[u.key] = pid
                    self.shown.pop(u.key, None)  # placed by the walk above: undone, never drawn or sampled
                    u.sup = None
                    continue
            out.append(u)
        return out


class MixedSource(ActorsSource):
    """An actors node and the other tasks of the asyncio application it runs in."""

    commands = ActorsSource.commands | {"cancel"}

    def __init__(self, node: actors.Node) -> None:
        if not isinstance(node, actors.Node):
            raise ValueError(
                f"MixedSource takes an actors.Node, not {type(node).__name__} (a plain loop's tasks: agent.start(loop))"
            )
        super().__init__(node)
        self.tasks = _AppTasks(node.loop, node)

    def attach(self, agent: Agent) -> None:
        super().attach(agent)
        self.tasks.attach(agent)

    def detach(self) -> None:
        self.tasks.detach()
        super().detach()

    def meta(self) -> dict[str, Any]:
        return {**super().meta(), **{k: v for k, v in self.tasks.meta().items() if k == "loop"}, "include_tasks": True}

    def count(self) -> int:
        return super().count() + self.tasks.count()

    def units(self) -> list[Any]:
        return [*super().units(), *self.tasks.units()]

    def records(self, units: list[Any]) -> list[Any]:
        procs = [u for u in units if isinstance(u, actors.Process)]
        rest = [u for u in units if not isinstance(u, actors.Process)]
        return [*(super().records(procs) if procs else []), *(self.tasks.records(rest) if rest else [])]

    def encode(self, ev: Any) -> Any:
        if type(ev) is tuple:
            return self.tasks.encode(ev)
        if type(ev) is actors.Spawned:
            self._note_process(ev.pid)
        return super().encode(ev)

    def _note_process(self, pid: actors.Pid) -> None:
        """Tell the tasks' source which task runs this new process (so that it need not walk the node)."""
        p = actors.find_process(self.node, pid)
        t = actors.process_task(p) if p is not None else None
        if t is not None:
            self.tasks._proc_of[id(t)] = str(pid)

    def account(self, ev: Any) -> None:
        if type(ev) is tuple:
            self.tasks.account(ev)
        else:
            super().account(ev)

    def scan(self) -> tuple[list[list[Any]], int]:
        rows, handled = super().scan()
        trows, thandled = self.tasks.scan()
        return [*rows, *trows], handled + thandled

    def scan_step(self, budget: float) -> tuple[list[list[Any]], int] | None:
        out = super().scan_step(budget)  # the node's processes in steps, then the tasks at once
        if out is None:
            return None
        trows, thandled = self.tasks.scan()
        return [*out[0], *trows], out[1] + thandled

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), **self.tasks.stats()}

    def totals(self, restarts: int, crashes: int) -> tuple[int, int]:
        # the node's own totals (whether or not an observer was attached) and the tasks' crashes
        node_restarts, node_crashes = super().totals(restarts, crashes)
        return node_restarts, node_crashes + self.tasks.crashes_total

    def recheck(self) -> None:
        super().recheck()
        self.tasks.recheck()

    def owner(self, task: asyncio.Task[Any] | None) -> tuple[str | None, str | None]:
        pid, name = super().owner(task)
        return (pid, name) if pid is not None else self.tasks.owner(task)

    def handlers(self, commands: Commands) -> dict[str, Handler]:
        """The node's commands, and for task pids ``inspect``/``info`` and ``cancel`` of the tasks' source."""
        own = self.tasks.handlers(commands)
        out: dict[str, Handler] = {}
        for cmd in ("inspect", "info"):
            out[cmd] = _by_pid(own[cmd], commands.handlers[cmd])
        out["cancel"] = own["cancel"]
        return out


def _by_pid(task_handler: Handler, process_handler: Handler) -> Handler:
    async def handle(session: Session, args: dict[str, Any]) -> Any:
        pid = args.get("pid")
        if isinstance(pid, str) and pid.startswith(f"<{TASKS_NODE}."):
            return await task_handler(session, args)
        return await process_handler(session, args)

    return handle
