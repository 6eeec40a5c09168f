"""Snapshot chunks built a piece at a time (agent/_session.py): the same bytes
as the chunk encoded whole, and no garbage collection set off by building them."""

from __future__ import annotations

import gc
from typing import Any

import actors
from agent import protocol as P
from agent._session import SNAPSHOT_CHUNK, SNAPSHOT_PIECE, Session
from tests.agent.conftest import Host, connect
from tests.conftest import wait_until


async def _idle(proc: actors.Process) -> None:
    while True:
        await proc.receive()


async def _watcher(proc: actors.Process, target: actors.Pid) -> None:
    proc.monitor(target)
    while True:
        await proc.receive()


async def _tree(host: Host, per: int) -> actors.Pid:
    """A root over two supervisors of ``per`` workers (budgets, links), odd
    child ids and labels, a monitor."""
    node = host.node
    specs = [
        actors.supervisor_spec(
            f"g{g}",
            [
                actors.worker(("w", i) if i % 7 == 0 else f"w{i}", _idle, label=f"Wörker\u2603{i % 3}")
                for i in range(per)
            ],
            strategy="one_for_one",
            intensity=100,
            period=float("inf") if g else 5.0,
            label=f"Shard{g}",
        )
        for g in range(2)
    ]
    root = await actors.start_supervisor(node, specs, strategy="one_for_all", name="root", label="Root")
    node.spawn(_watcher, root, name="watcher")
    return root


async def _session(host: Host) -> tuple[Any, Session]:
    client = await connect(host)
    await client.read_snapshot()
    (session,) = host.agent.sessions
    return client, session


async def test_a_chunk_built_in_pieces_is_the_chunk_encoded_whole(host: Host) -> None:
    host.run_async(_tree(host, 160))
    extra = host.run(lambda: [host.node.spawn(_idle) for _ in range(150)])
    client, session = await _session(host)
    try:
        units = host.agent.node_processes()
        assert len(units) > 4 * SNAPSHOT_PIECE and [p.pid for p in units[-150:]] == extra
        # processes that died since the list was taken: skipped, and a piece of
        # dead ones only (the last) leaves no stray comma
        dead = units[-150:]
        host.run(lambda: [host.node.exit(pid, actors.KILL) for pid in extra])
        await wait_until(lambda: not any(p.alive for p in dead), what="the extra processes dead")
        for seq, part in ((7, units), (8, units[: SNAPSHOT_PIECE // 2]), (9, dead)):
            whole = P.encode_frame(
                {"t": "snapshot_chunk", "seq": seq, "procs": host.agent.node_records(part)}, fast=True
            )
            assert session._chunk_frame(seq, part) == whole
        recs = P.decode_payload(whole[P.HEADER.size :])["procs"]
        assert recs == []
        frame = session._chunk_frame(7, units)
        assert frame is not None
        recs = P.decode_payload(frame[P.HEADER.size :])["procs"]
        assert len(recs) == len(units) - len(dead)
        assert any(r["budget"] and r["budget"]["period"] == "inf" for r in recs)
        assert any(r["monitors"] for r in recs) and any(r["child_id"] == "('w', 0)" for r in recs)
        assert any(r["label"] == "W\u00f6rker\u26031" for r in recs)
    finally:
        await client.close()


async def test_building_a_chunk_sets_off_no_young_collection(host: Host) -> None:
    """Only a piece's records are alive at once: fewer tracked objects than the
    first generation's threshold, so building chunks of 2,000 collects
    nothing (a whole chunk's records set off ~7 young collections, and their
    survivors brought the node's next full collection closer)."""
    host.run_async(_tree(host, SNAPSHOT_CHUNK // 2))
    client, session = await _session(host)
    try:
        units = host.agent.node_processes()[:SNAPSHOT_CHUNK]
        assert len(units) == SNAPSHOT_CHUNK

        def young() -> int:
            return int(gc.get_stats()[0]["collections"])

        session._chunk_frame(1, units)  # every process's meta cached (as after a first snapshot)
        before = young()
        for seq in range(3):
            P.encode_frame({"t": "snapshot_chunk", "seq": seq, "procs": host.agent.node_records(units)}, fast=True)
        whole = young() - before
        before = young()
        for seq in range(3):
            session._chunk_frame(seq, units)
        pieces = young() - before
        # whole chunks: ~7 each; in pieces none but those set off by the
        # other threads' allocations meanwhile (the node's, the agent's sampling)
        assert whole >= 10 and pieces * 3 <= whole, (whole, pieces)
    finally:
        await client.close()
