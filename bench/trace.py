"""What message tracing costs the runtime: ``python -m bench trace [--quick]``.

A node runs in its own thread with its agent, and a real observer client is
attached on loopback, reading every frame (the trace frames included).

* ``traced_call_ratio``: gen_server call round trips/s (``Process.call`` from
  a client process) with both ends in a trace session of that observer
  (limits set high: the trace runs through the block), over the same with
  nothing traced, in alternating blocks of the same run. Target >= 0.5.
* ``untraced_call_ratio_while_tracing_others``: round trips/s of an untraced
  pair while another pair is in a trace session, over the same with nothing
  traced. Target >= 0.97: a process that is not traced pays nothing beyond
  its one ``traced`` check.

Each figure is the median of per-pair ratios (adjacent blocks see about the
same load). The machine is shared: the figures are noisy.

``trace_ratios(calls=, pairs=)`` is what ``python -m bench actors`` can call to
carry the two figures.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import gc
import itertools
import time
from collections.abc import Callable
from typing import Any

import actors
import agent
from agent.client import AgentClient, AgentError
from bench._util import emit, machine, median, progress

TARGETS = {"traced_call_ratio": (">=", 0.5), "untraced_call_ratio_while_tracing_others": (">=", 0.97)}
TOKEN = "bench-trace-operator-token-0123456789"


class _Echo(actors.GenServer):
    async def init(self, *args: Any) -> Any:
        return None

    async def handle_call(self, request: Any, from_: actors.From, state: Any) -> Any:
        return actors.Reply(request, state)


Clock = Callable[[], float]


def _client(
    node: actors.Node, server: actors.Pid, n: int, clock: Clock = time.perf_counter
) -> tuple[actors.Pid, concurrent.futures.Future[float]]:
    """A process that, once sent ``go``, calls ``server`` ``n`` times; the future gets its rate."""
    done: concurrent.futures.Future[float] = concurrent.futures.Future()

    async def body(proc: actors.Process) -> None:
        await proc.receive()
        call = proc.call
        t0 = clock()
        for i in range(n):
            await call(server, i)
        done.set_result(n / max(clock() - t0, 1e-9))

    return node.apply_threadsafe(lambda: node.spawn(body)), done


class _Bench:
    def __init__(self, calls: int, clock: Clock) -> None:
        self.calls = calls
        self.clock = clock
        self.node = actors.Node.start_in_thread(log_crashes=False)
        self.agent = agent.start(self.node, "127.0.0.1:0", token=TOKEN.encode())
        self.ids = itertools.count(1)
        self.frames = 0
        self.client: AgentClient | None = None
        self._reader: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self.client = await AgentClient.connect("127.0.0.1", self.agent.port, token=TOKEN, role="operator")
        self._reader = asyncio.get_running_loop().create_task(self._read())
        run = self.node.run_threadsafe
        a = run(actors.start_server(self.node, _Echo)).result(10)
        b = run(actors.start_server(self.node, _Echo)).result(10)
        assert a is not None and b is not None
        self.server_a: actors.Pid = a
        self.server_b: actors.Pid = b

    async def _read(self) -> None:
        """The observer reading: every frame taken off the socket."""
        assert self.client is not None
        while True:
            await self.client.next_message(3600)
            self.frames += 1

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self.client is not None:
            await self.client.close()
        self.agent.stop()
        self.node.stop_thread()

    async def _trace(self, pids: list[actors.Pid]) -> str:
        assert self.client is not None
        tid = f"bench{next(self.ids)}"
        await self.client.command(
            "trace", id=tid, pids=[str(p) for p in pids], max_msgs=100_000, max_rate=10_000, duration=3600
        )
        return tid

    async def _untrace(self, tid: str) -> None:
        assert self.client is not None
        try:
            await self.client.command("trace", id=tid, on=False)
        except AgentError:  # it ended by itself (a limit)
            pass

    async def block(self, server: actors.Pid, *, traced: bool, other: bool = False) -> float:
        """One block of calls to ``server``; ``traced``: caller and server traced;
        ``other``: meanwhile the other pair (idle) is in a trace session."""
        gc.collect()
        pid, done = _client(self.node, server, self.calls, self.clock)
        tid = None
        if traced:
            tid = await self._trace([pid, server])
        elif other:
            idle, _ = _client(self.node, self.server_a, 1)
            tid = await self._trace([idle, self.server_a])
        self.node.apply_threadsafe(lambda: self.node.send(pid, "go"))
        rate = await asyncio.wrap_future(done)
        if tid is not None:
            await self._untrace(tid)
        return rate


async def _run(calls: int, pairs: int, clock: Clock) -> dict[str, Any]:
    b = _Bench(calls, clock)
    await b.open()
    try:
        await b.block(b.server_a, traced=False)  # warm-up
        await b.block(b.server_a, traced=True)
        traced, plain, others, alone = [], [], [], []
        for i in range(pairs):
            first, second = (True, False) if i % 2 == 0 else (False, True)
            r1 = await b.block(b.server_a, traced=first)
            r2 = await b.block(b.server_a, traced=second)
            t, u = (r1, r2) if first else (r2, r1)
            traced.append(t)
            plain.append(u)
            o1 = await b.block(b.server_b, traced=False, other=first)
            o2 = await b.block(b.server_b, traced=False, other=second)
            o, a = (o1, o2) if first else (o2, o1)
            others.append(o)
            alone.append(a)
            progress(
                f"pair {i + 1}/{pairs}: traced {t:,.0f}/s untraced {u:,.0f}/s; "
                f"untraced while tracing others {o:,.0f}/s, with nothing traced {a:,.0f}/s"
            )
        return {
            "traced_call_ratio": round(median([t / u for t, u in zip(traced, plain, strict=True)]), 3),
            "untraced_call_ratio_while_tracing_others": round(
                median([o / a for o, a in zip(others, alone, strict=True)]), 3
            ),
            "traced_call_rt_per_s": round(median(traced)),
            "untraced_call_rt_per_s": round(median(plain)),
            "frames_read": b.frames,
            "trace_events_dropped_by_the_rate_cap": b.agent.collector.trace_dropped,
            "clock": "cpu (process_time: the agent's and the observer's threads too)"
            if clock is time.process_time
            else "wall (perf_counter)",
            "calls_per_block": calls,
            "pairs": pairs,
        }
    finally:
        await b.close()


def trace_ratios(*, calls: int = 5_000, pairs: int = 20, clock: Clock = time.perf_counter) -> dict[str, Any]:
    """The two figures (and their rates), for ``python -m bench actors`` to carry.
    ``clock``: ``time.process_time`` counts the CPU of the whole process (the
    agent's thread and the observer client's too), steadier on a busy machine."""
    return asyncio.run(_run(calls, pairs, clock))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench trace", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run (seconds; figures are rough)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="time the blocks by wall or CPU time")
    args = parser.parse_args(argv)
    calls, pairs = (2_000, 3) if args.quick else (5_000, 20)
    progress(f"{pairs} pairs of blocks of {calls:,} calls (the machine is shared: figures are noisy)")
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    figures = trace_ratios(calls=calls, pairs=pairs, clock=clock)
    emit({"bench": "trace", "quick": args.quick, "machine": machine(), "targets": TARGETS, **figures})
    return 0
