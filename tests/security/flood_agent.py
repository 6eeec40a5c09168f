"""An attacker's process: ``python -m tests.security.flood_agent PORT LOCAL_ADDR N``
holds N half-open handshakes to an agent (connect, read ``hello``, never
answer; connect again as soon as the agent drops one), prints ``up`` once N
were opened, and stops when its stdin closes."""

from __future__ import annotations

import asyncio
import sys


async def _slot(port: int, local: str, stop: asyncio.Event, opened: list[int], n: int) -> None:
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(local, 0))
        except OSError:
            await asyncio.sleep(0.01)
            continue
        opened[0] += 1
        if opened[0] == n:
            print("up", flush=True)
        try:
            read = asyncio.ensure_future(reader.read())
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({read, stopped}, return_when=asyncio.FIRST_COMPLETED)
            read.cancel()
            stopped.cancel()
        except OSError:
            pass
        finally:
            writer.close()


async def main(port: int, local: str, n: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.buffer.read1(4096) else None)
    opened = [0]
    await asyncio.gather(*(_slot(port, local, stop, opened, n) for _ in range(n)))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
