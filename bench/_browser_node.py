"""A synthetic node for ``python -m bench browser``: ``python -m bench._browser_node``.

Builds ``groups`` supervisors of ``per`` idle workers each under one root
(worker labels cycle over ten names, so no ten-thousand-way grouping hides
them: each supervisor shows ``per / 10`` children per label), starts the agent
on 127.0.0.1 with ``OBSERVER_AGENT_TOKEN`` and prints ``agent HOST:PORT``.

Then reads commands on stdin, one per line:

* ``churn R``: kill random workers so that about ``R`` lifecycle events a
  second happen (each kill is an exit, a restart and a spawn: three events);
  ``churn 0`` stops;
* ``count``: prints ``count N`` (lifecycle events caused so far);
* ``pid G I``: prints ``pid <pid>`` of worker ``I`` of supervisor ``G``.

Threading rules
    The node's loop runs in the main thread; a daemon thread reads stdin and
    hands each line to the loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sys
import threading
from typing import Any

import actors
import agent

LABELS = ("Fetcher", "Parser", "Indexer", "Cache", "Mailer", "Scheduler", "Uploader", "Resizer", "Billing", "Audit")


async def _idle(proc: actors.Process) -> None:
    while True:
        await proc.receive()


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def run(groups: int, per: int, token: str) -> int:
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def reader() -> None:
        for raw in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, raw.strip())
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(lines.put_nowait, None)

    async with actors.Node(log_crashes=False) as node:
        specs = [
            actors.supervisor_spec(
                f"g{g}",
                [actors.worker(f"w{i}", _idle, label=LABELS[i % len(LABELS)]) for i in range(per)],
                strategy="one_for_one",
                intensity=1_000_000,
                period=1.0,
                label=f"Shard{g}",
            )
            for g in range(groups)
        ]
        root = await actors.start_supervisor(
            node, specs, strategy="one_for_one", intensity=1_000_000, period=1.0, name="bench_root", label="Root"
        )
        sups = [row.pid for row in await actors.which_children(node, root, timeout=60.0) if row.pid is not None]
        hz = float(os.environ.get("BENCH_SAMPLE_HZ") or 4.0)  # the agent's sampling scans a second (its default)
        ag = agent.start(node, "127.0.0.1:0", token=token, sample_hz=hz)
        threading.Thread(target=reader, name="bench-node-stdin", daemon=True).start()
        _say(f"agent 127.0.0.1:{ag.port} processes={len(node.processes())}")
        rng = random.Random(7)
        state: dict[str, Any] = {"rate": 0.0, "count": 0}

        cache: dict[actors.Pid, list[actors.Pid]] = {}

        async def churn() -> None:
            tick = 0.01
            owed = 0.0
            while True:
                await asyncio.sleep(tick)
                owed += state["rate"] * tick / 3
                while owed >= 1:
                    sup = rng.choice(sups)
                    pids = cache.get(sup)
                    if not pids:
                        try:
                            kids = await actors.which_children(node, sup, timeout=5.0)
                        except actors.ActorError:
                            continue
                        pids = cache[sup] = [k.pid for k in kids if k.pid is not None]
                        rng.shuffle(pids)
                    if not pids:
                        continue
                    pid = pids.pop()
                    if node.is_alive(pid):
                        owed -= 1
                        node.exit(pid, actors.KILL)
                        state["count"] += 3

        task = asyncio.create_task(churn())
        try:
            while (line := await lines.get()) is not None:
                cmd, *args = line.split()
                if cmd == "churn":
                    state["rate"] = float(args[0])
                elif cmd == "count":
                    _say(f"count {state['count']}")
                elif cmd == "pid":
                    kids = await actors.which_children(node, sups[int(args[0])], timeout=5.0)
                    _say(f"pid {kids[int(args[1])].pid}")
        finally:
            task.cancel()
            ag.stop()
    return 0


def main() -> int:
    token = os.environ.get("OBSERVER_AGENT_TOKEN", "")
    groups = int(os.environ.get("BENCH_GROUPS", "100"))
    per = int(os.environ.get("BENCH_PER", "100"))
    return asyncio.run(run(groups, per, token))


if __name__ == "__main__":
    sys.exit(main())
