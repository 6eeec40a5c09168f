"""An unmodified asyncio program with an ``actors`` node inside, for the
launcher's mixed picture (``tests/agent/test_asyncio_launcher.py``,
``tests/browser/test_mixed_web.py``): started by ``python -m agent run --
python -m tests.browser.mixed_app``, it runs a supervision tree next to
plain asyncio tasks (a TaskGroup of pollers) until stdin closes, and prints
``ready`` once everything runs."""

from __future__ import annotations

import asyncio
import sys

import actors


async def keeper(proc: actors.Process) -> None:
    while True:
        await proc.receive()


async def poller(i: int) -> None:
    ticks = 0
    while True:
        await asyncio.sleep(0.2 + i / 10)  # polls something on a timer
        ticks += 1


async def main() -> None:
    async with actors.Node(log_crashes=False) as node:
        await actors.start_supervisor(
            node,
            [actors.worker("ledger", keeper), actors.worker("mailer", keeper)],
            intensity=5,
            period=10,
            name="billing_sup",
        )
        loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as tg:
            for i in range(2):
                tg.create_task(poller(i), name=f"poller-{i}")
            print("ready", flush=True)
            await loop.run_in_executor(None, sys.stdin.readline)  # until stdin closes
            raise SystemExit(0)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except SystemExit:
        pass
