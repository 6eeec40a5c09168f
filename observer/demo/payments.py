"""Run the demo system and print a one-line status every second.

    python -m observer.demo.payments [--duration SECONDS] [--seed N] [--scale N] [--verbose]

Stops cleanly (the tree shut down in order, exit status 0) on Ctrl-C, on
SIGTERM, or after ``--duration`` seconds. Uses only the public ``actors`` API:
``node.processes()``, ``node.info()`` and an :class:`actors.Instrument`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import actors

from .system import build


@dataclass
class _Crash:
    pid: actors.Pid
    label: str | None
    reason: str


class StatusCounter(actors.Instrument):
    """Counts restarts, abnormal exits and crashes (exits with an exception)."""

    def __init__(self) -> None:
        self.restarts = 0
        self.abnormal_exits = 0
        self.crashes = 0
        self.gave_up = 0
        self.last_crash: _Crash | None = None
        self._labels: dict[actors.Pid, str | None] = {}

    def spawned(self, event: actors.Spawned) -> None:
        # Exited carries no label and the process is gone by then: remember it now
        self._labels[event.pid] = event.label

    def exited(self, event: actors.Exited) -> None:
        label = self._labels.pop(event.pid, None)
        if actors.is_normal_shutdown(event.reason):
            return
        self.abnormal_exits += 1
        if isinstance(event.reason, BaseException):
            self.crashes += 1
            self.last_crash = _Crash(event.pid, label, actors.format_reason(event.reason))

    def restarted(self, event: actors.Restarted) -> None:
        self.restarts += 1

    def supervisor_gave_up(self, event: actors.SupervisorGaveUp) -> None:
        self.gave_up += 1


def status_line(node: actors.Node, counter: StatusCounter, elapsed: float) -> str:
    """One line: processes, sessions, the fullest mailbox, restarts, the last crash."""
    procs = 0
    sessions = 0
    fullest: actors.ProcessInfo | None = None
    for pid in node.processes():
        try:
            info = node.info(pid)
        except actors.NoProcess:
            continue
        procs += 1
        if info.label == "SessionWorker":
            sessions += 1
        if fullest is None or info.mailbox_len > fullest.mailbox_len:
            fullest = info
    mailbox = f"{fullest.mailbox_len} ({fullest.label} {fullest.pid})" if fullest and fullest.mailbox_len else "0"
    last = counter.last_crash
    crash = f"{last.label or '?'} {last.pid}: {last.reason}" if last else "-"
    if len(crash) > 110:
        crash = crash[:107] + "..."
    return (
        f"[{elapsed:6.1f}s] procs={procs} sessions={sessions} max_mailbox={mailbox} "
        f"restarts={counter.restarts} crashes={counter.crashes} gave_up={counter.gave_up} last_crash={crash}"
    )


async def run(*, duration: float | None, seed: int | None, scale: int, verbose: bool) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    handled: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on this platform / thread
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
    try:
        async with actors.Node(log_crashes=verbose) as node:
            counter = StatusCounter()
            node.add_instrument(counter)
            demo = await build(node, scale=scale, seed=seed)
            print(
                f"demo system up: root {demo.root}, seed {demo.seed}, scale {scale}, "
                f"{node.process_count()} processes (Ctrl-C to stop)",
                flush=True,
            )
            started = time.monotonic()
            ticks = 0
            while not stop.is_set():
                ticks += 1
                wake = started + ticks
                if duration is not None:
                    wake = min(wake, started + duration)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(wake - time.monotonic(), 0.0))
                elapsed = time.monotonic() - started
                print(status_line(node, counter, elapsed), flush=True)
                if duration is not None and elapsed >= duration:
                    break
            alive = node.is_alive(demo.root)
            await demo.stop()
            node.remove_instrument(counter)
        print(
            f"stopped: {counter.restarts} restarts, {counter.crashes} crashes, "
            f"{counter.gave_up} supervisors gave up; root was {'alive' if alive else 'dead'}",
            flush=True,
        )
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m observer.demo.payments", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=None, help="seconds to run (default: until interrupted)")
    parser.add_argument("--seed", type=int, default=None, help="seed for every random choice (default: random)")
    parser.add_argument("--scale", type=int, default=1, help="load multiplier (about 50 sessions each)")
    parser.add_argument("--verbose", action="store_true", help="log every crash with its traceback")
    args = parser.parse_args(argv)
    if args.scale < 1:
        parser.error("--scale must be >= 1")
    if args.duration is not None and args.duration <= 0:
        parser.error("--duration must be > 0")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return asyncio.run(run(duration=args.duration, seed=args.seed, scale=args.scale, verbose=args.verbose))
    except KeyboardInterrupt:  # platforms without loop signal handlers
        return 0


if __name__ == "__main__":
    sys.exit(main())
