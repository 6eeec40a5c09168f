"""One node of a demo cluster, in its own OS process: ``python -m observer.demo.node``.

The demo system (:mod:`observer.demo.system`) on a fresh node, with its agent
configured from the environment (:func:`agent.start_from_env`): it listens on
``OBSERVER_AGENT_BIND`` (default ``127.0.0.1:0``) and/or dials out to the
observer at ``OBSERVER_DIAL``. Tokens come from ``OBSERVER_AGENT_TOKEN`` /
``OBSERVER_AGENT_TOKEN_FILE`` (and the ``READ`` twins), never the command line.
``OBSERVER_DEMO_SEED``, ``OBSERVER_DEMO_SCALE`` and ``OBSERVER_DEMO_TRAFFIC``
(``0``: no traffic, nothing changes on its own) shape the demo.

Prints one line ``agent HOST:PORT`` once listening (the address observers
attach to), then runs until SIGINT/SIGTERM. Used by ``docker/demo.Dockerfile``,
``docker/compose.yaml`` and the cluster tests.

Threading rules
    The node's loop runs in the main thread; the agent in its own thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys

import actors
import agent

from .system import build

__all__ = ["main", "run"]


async def run() -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    seed = os.environ.get("OBSERVER_DEMO_SEED")
    scale = int(os.environ.get("OBSERVER_DEMO_SCALE") or 1)
    traffic = os.environ.get("OBSERVER_DEMO_TRAFFIC", "1") not in ("0", "false", "no")
    if not os.environ.get("OBSERVER_AGENT_BIND") and not os.environ.get("OBSERVER_DIAL"):
        os.environ["OBSERVER_AGENT_BIND"] = "127.0.0.1:0"
    async with actors.Node(log_crashes=False) as node:
        demo = await build(node, scale=scale, seed=int(seed) if seed else None, traffic=traffic)
        ag = agent.start_from_env(node)
        assert ag is not None
        try:
            print(f"agent {ag.address} seed={demo.seed} scale={scale} pid={os.getpid()}", flush=True)
            await stop.wait()
        finally:
            ag.stop()
            await demo.stop()
    return 0


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="node: %(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(run())
    except ValueError as exc:  # a configuration error (a missing token, a bad address)
        print(f"observer.demo.node: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
