"""The demo system in its own OS process, with its agent: ``python -m observer.demo``.

The package ships with the wheel: :mod:`.system` (the demo system itself, a
service built on :mod:`actors`), :mod:`.node` (one node of a demo cluster,
``python -m observer.demo.node``) and :mod:`.payments` (the demo system alone,
with a status line a second). ``examples/`` in the repository re-exports them
under their old names.


Started by ``observer demo``. Reads its settings from the environment (never
the command line, which other users can read): ``OBSERVER_AGENT_TOKEN`` (the
operator token) and/or ``OBSERVER_AGENT_READ_TOKEN`` (read-only; the observer
attaches with it when destructive actions are off), ``OBSERVER_DEMO_SEED``,
``OBSERVER_DEMO_SCALE``.
Runs :func:`observer.demo.system.build` on a fresh node, starts the agent on
127.0.0.1 (a free port) and prints one line ``agent 127.0.0.1:PORT`` on
stdout. Stops cleanly on SIGINT/SIGTERM or when stdin closes (the parent
observer died).

Threading rules
    The node's loop runs in this process's main thread; a daemon thread
    watches stdin and sets the stop event through ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading

import actors
import agent

from .system import build

__all__ = ["AGENT_LINE", "main", "run"]

AGENT_LINE = "agent "
"""Prefix of the line that announces the agent's address."""


async def run(
    *, token: str | None, read_token: str | None = None, seed: int | None, scale: int, watch_stdin: bool = True
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    if watch_stdin:

        def watch() -> None:
            with contextlib.suppress(Exception):
                while sys.stdin.read(4096):
                    pass
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=watch, name="demo-stdin", daemon=True).start()
    async with actors.Node(log_crashes=False) as node:
        demo = await build(node, scale=scale, seed=seed)
        ag = agent.start(node, "127.0.0.1:0", token=token, read_token=read_token)
        try:
            print(f"{AGENT_LINE}127.0.0.1:{ag.port} seed={demo.seed} scale={scale}", flush=True)
            await stop.wait()
        finally:
            ag.stop()
            await demo.stop()
    return 0


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="demo: %(levelname)s %(name)s: %(message)s")
    token = os.environ.get("OBSERVER_AGENT_TOKEN") or None
    read_token = os.environ.get("OBSERVER_AGENT_READ_TOKEN") or None
    if not token and not read_token:
        print("observer.demo: neither OBSERVER_AGENT_TOKEN nor OBSERVER_AGENT_READ_TOKEN is set", file=sys.stderr)
        return 2
    seed = os.environ.get("OBSERVER_DEMO_SEED")
    scale = int(os.environ.get("OBSERVER_DEMO_SCALE") or 1)
    try:
        return asyncio.run(run(token=token, read_token=read_token, seed=int(seed) if seed else None, scale=scale))
    except KeyboardInterrupt:
        return 0
