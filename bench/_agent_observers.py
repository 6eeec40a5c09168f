"""The observers of ``python -m bench agent``, besides the node: the reader
(a separate OS process reading everything, timing each exit's delivery;
:func:`reader_serve` attaches and detaches on command, one process for a
whole run) and the observer that never reads (the agent's memory bound
under it)."""

from __future__ import annotations

import asyncio
import gc
import json
import struct
import sys
import time
import tracemalloc
from typing import Any

import actors
import agent
from agent import protocol as P

TOKEN = "bench-token-0123456789abcdef"


async def _worker(proc: actors.Process) -> None:
    await proc.receive()


async def stalled_observer(events: int) -> dict[str, Any]:
    async with actors.Node(log_crashes=False) as node:
        ag = agent.start(node, "127.0.0.1:0", token=TOKEN)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", ag.port)
            (n,) = struct.unpack(">I", await reader.readexactly(4))
            hello = P.decode_payload(await reader.readexactly(n))
            nonce, observer_id = "d" * 32, "stalled-bench-observer"
            mac = P.client_mac(
                TOKEN.encode(),
                hello["nonce"],
                nonce,
                "operator",
                agent_id=str(hello["agent"]),
                observer_id=observer_id,
                channel=P.channel_binding(None),
            )
            auth: P.AuthMsg = {
                "t": "auth",
                "version": P.VERSION,
                "nonce": nonce,
                "observer": observer_id,
                "role": "operator",
                "mac": mac,
            }
            writer.write(P.encode_frame(auth))
            await writer.drain()
            await asyncio.sleep(0.2)
            gc.collect()
            tracemalloc.start()
            base = _agent_bytes(tracemalloc.take_snapshot())
            peak = 0
            done = 0
            while done < events:
                batch = [node.spawn(_worker) for _ in range(500)]
                for p in batch:
                    node.exit(p, "kill")
                done += 1000
                await asyncio.sleep(0)
                if done % 10000 == 0:
                    await asyncio.sleep(0.05)
                    peak = max(peak, _agent_bytes(tracemalloc.take_snapshot()) - base)
            await asyncio.sleep(0.5)
            gc.collect()
            held = _agent_bytes(tracemalloc.take_snapshot()) - base
            tracemalloc.stop()
            s = ag.sessions[0] if ag.sessions else None
            if s is None or not s.ready:
                raise RuntimeError("the stalled observer was not attached: the figure would measure nothing")
            info = {
                "held_bytes": max(held, peak),
                "held_at_end": held,
                "peak_during_churn": peak,
                "session_peak_events": s.peak_events if s else None,
                "session_event_bytes": s.event_bytes if s else None,
                "session_dropped": s.dropped if s else None,
                "write_buffer": s.writer.transport.get_write_buffer_size() if s else None,
                "how": "tracemalloc, allocations made from agent/ and asyncio/ code (the agent's queues, "
                "encoded frames and socket buffers), peak over the churn minus before",
            }
            writer.close()
            return info
        finally:
            ag.stop()


async def reader_main(port: int, seconds: float, features: str) -> None:
    feats = tuple(f for f in features.split(",") if f and f != "none")
    client = await agent.client.AgentClient.connect("127.0.0.1", port, token=TOKEN, features=feats)
    await client.read_snapshot()
    print("ready", flush=True)
    lat: list[list[float]] = []  # [event time, latency ms]
    n = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    try:
        while loop.time() < deadline:
            try:
                msg = await client.next_message(0.5)
            except TimeoutError:
                continue
            n += 1
            if msg.get("t") == "ev" and msg.get("ev") == "exit":
                lat.append([msg["time"], (time.time() - msg["time"]) * 1000])
    except asyncio.CancelledError:
        pass
    finally:
        print(json.dumps({"crash_latencies_ms": lat, "messages": n}), flush=True)
        await client.close()


async def reader_serve(features: str) -> None:
    """A reader kept for a whole run, driven by lines on stdin: ``attach PORT``
    (connects, reads the snapshot, prints ``ready``), then ``detach`` (closes,
    prints one JSON line: ``crash_latencies_ms`` as [exit time, ms] pairs and
    ``messages``); ends at end of input. One process for all the cycles: no
    interpreter starting next to the host in each of them."""
    feats = tuple(f for f in features.split(",") if f and f != "none")
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    while True:
        line = (await stdin.readline()).split()
        if not line:
            return
        if line[0] != b"attach":
            raise RuntimeError(f"reader: unexpected command {line!r}")
        client = await agent.client.AgentClient.connect("127.0.0.1", int(line[1]), token=TOKEN, features=feats)
        await client.read_snapshot()
        lat: list[list[float]] = []
        count = [0]
        task = asyncio.create_task(_read_all(client, lat, count))
        print("ready", flush=True)
        cmd = await stdin.readline()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        await client.close()
        print(json.dumps({"crash_latencies_ms": lat, "messages": count[0]}), flush=True)
        if not cmd:
            return


async def _read_all(client: agent.client.AgentClient, lat: list[list[float]], count: list[int]) -> None:
    while True:
        try:
            msg = await client.next_message(0.5)
        except TimeoutError:
            continue
        count[0] += 1
        if msg.get("t") == "ev" and msg.get("ev") == "exit":
            lat.append([msg["time"], (time.time() - msg["time"]) * 1000])


def _agent_bytes(snap: tracemalloc.Snapshot) -> int:
    """Bytes currently allocated from the agent's own code and asyncio's streams."""
    total = 0
    for stat in snap.statistics("filename"):
        name = stat.traceback[0].filename
        if "/agent/" in name or "/asyncio/" in name:
            total += stat.size
    return total
