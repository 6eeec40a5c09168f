"""Dead processes are freed by reference counting: a kill storm leaves the cyclic GC nothing to do.

A cycle per dead process (a cancelled task and its own CancelledError's
traceback; a gen_server and its process pointing at each other) would pile up
under churn until a full collection pauses the loop for hundreds of
milliseconds at 10,000 processes.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

import actors


async def _idle(proc: actors.Process) -> None:
    while True:
        await proc.receive()


class _Server(actors.GenServer):
    async def handle_cast(self, request: object, state: object) -> object:
        return state


@pytest.fixture
def no_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.usefixtures("no_gc")
def test_killed_and_restarted_workers_and_gen_servers_leave_no_cyclic_garbage() -> None:
    async def main() -> int:
        async with actors.Node(log_crashes=False) as node:
            specs = [actors.worker(f"w{i}", _idle) for i in range(20)]
            specs += [_Server.child_spec(id=f"s{i}") for i in range(20)]
            sup = await actors.start_supervisor(node, specs, intensity=1000, period=1.0)
            gc.collect()
            for _ in range(5):
                pids = [row.pid for row in await actors.which_children(node, sup) if row.pid is not None]
                for pid in pids:
                    node.exit(pid, actors.KILL)
                await actors.which_children(node, sup)  # the supervisor has handled every exit
            await asyncio.sleep(0)
            return gc.collect()

    assert asyncio.run(main()) == 0


@pytest.mark.usefixtures("no_gc")
def test_a_restarted_gen_server_keeps_few_objects_for_the_collector() -> None:
    # What a live server holds is what every young collection walks until the object
    # ages: at 1,000 restarts a second they pile up in the young generation. A waiting
    # gen_server: its task (with its weak reference in asyncio's task set and its
    # context), two coroutines (the loop, receive), the wait's future, its iterator and
    # the task's wake-up method, the server, its process, its pid and its links: 12.
    async def main() -> float:
        async with actors.Node(log_crashes=False) as node:
            n = 50
            specs = [_Server.child_spec(id=f"s{i}") for i in range(n)]
            sup = await actors.start_supervisor(node, specs, intensity=1000, period=1.0)
            pids = [row.pid for row in await actors.which_children(node, sup) if row.pid is not None]
            await actors.which_children(node, sup)
            gc.collect()
            gc.freeze()  # what the servers hold now is out of the count
            try:
                for pid in pids:
                    node.exit(pid, actors.KILL)
                await actors.count_children(node, sup)  # the supervisor has restarted them all
                await asyncio.sleep(0)
                gc.collect()
                # the start timers, cancelled, wait in the loop's heap until it drops them in a batch
                kept = [o for o in gc.get_objects() if not (isinstance(o, asyncio.TimerHandle) and o.cancelled())]
                return len(kept) / n
            finally:
                gc.unfreeze()

    assert asyncio.run(main()) <= 12.5
