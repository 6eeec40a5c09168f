"""The sustained workload's node collects its young generations on a timer (bench/_sustained.py)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from typing import Any

from bench._sustained import collect_young


async def test_the_timer_collects_the_young_generation_and_every_tenth_time_the_middle_one() -> None:
    seen: list[int] = []
    two = asyncio.Event()

    def note(phase: str, info: dict[str, Any]) -> None:  # (on this loop's thread: the timer collects)
        if phase == "start":
            seen.append(int(info["generation"]))
            if seen.count(1) >= 2:  # (a collection CPython starts itself may come in between)
                two.set()

    threshold = gc.get_threshold()
    gc.callbacks.append(note)
    task = asyncio.get_running_loop().create_task(collect_young(1.0))
    try:
        async with asyncio.timeout(10.0):
            await two.wait()
        assert gc.get_threshold()[2] == 1000  # the timer's collections bring on no full one
        assert seen.count(0) >= 9 * seen.count(1) - 9
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        gc.callbacks.remove(note)
        gc.set_threshold(*threshold)
