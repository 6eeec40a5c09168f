"""Processes, mailboxes, links, monitors and exit signals (OTP semantics)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import actors as A
from tests.conftest import wait_until


async def _echo(proc: A.Process) -> None:
    while True:
        frm, msg = await proc.receive()
        proc.send(frm, msg)


async def _idle(proc: A.Process) -> None:
    await proc.receive(lambda m: m == "stop")


async def _crash(proc: A.Process, exc: BaseException) -> None:
    raise exc


async def _collector(proc: A.Process, out: list[Any], n: int) -> None:
    for _ in range(n):
        out.append(await proc.receive())


async def test_pid_prints_like_erlang_and_round_trips() -> None:
    async with A.Node() as node:
        pid = node.spawn(_idle)
        assert str(pid) == f"<0.{pid.id}.0>"
        assert A.Pid.parse(str(pid)) == pid
        with pytest.raises(ValueError):
            A.Pid.parse("0.1.0")


async def test_send_to_dead_pid_is_silently_dropped() -> None:
    async with A.Node() as node:
        pid = node.spawn(_crash, RuntimeError("x"))
        node.log_crashes = False
        await wait_until(lambda: not node.is_alive(pid))
        node.send(pid, "hello")  # no error


async def test_send_to_unregistered_name_raises_noprocess() -> None:
    async with A.Node() as node:
        with pytest.raises(A.NoProcess):
            node.send("nobody", 1)


async def test_selective_receive_keeps_unmatched_messages_in_order() -> None:
    async with A.Node() as node:
        got: list[Any] = []

        async def body(proc: A.Process) -> None:
            got.append(await proc.receive(lambda m: m == "b"))
            got.append(await proc.receive())
            got.append(await proc.receive())

        pid = node.spawn(body)
        for m in ("a", "c", "b"):
            node.send(pid, m)
        await wait_until(lambda: len(got) == 3)
        assert got == ["b", "a", "c"]


async def test_receive_timeout_raises_and_leaves_mailbox_alone() -> None:
    async with A.Node() as node:
        result: list[Any] = []

        async def body(proc: A.Process) -> None:
            try:
                await proc.receive(lambda m: m == "never", timeout=0.01)
            except A.ReceiveTimeout:
                result.append("timeout")
            result.append(await proc.receive(timeout=0))

        pid = node.spawn(body)
        node.send(pid, "other")
        await wait_until(lambda: len(result) == 2)
        assert result == ["timeout", "other"]


async def test_registered_names_send_whereis_unregister() -> None:
    async with A.Node() as node:
        out: list[Any] = []
        pid = node.spawn(_collector, out, 1, name="sink")
        assert node.whereis("sink") == pid
        with pytest.raises(A.NameTaken):
            node.register("sink", node.spawn(_idle))
        node.send("sink", 42)
        await wait_until(lambda: out == [42])
        assert node.whereis("sink") is None  # gone with the process
        other = node.spawn(_idle)
        node.register("x", other)
        node.unregister("x")
        assert node.whereis("x") is None


async def test_link_propagates_abnormal_exit_and_ignores_normal() -> None:
    async with A.Node(log_crashes=False) as node:

        async def parent(proc: A.Process, reason: Any) -> None:
            proc.spawn_link(_crash if reason != "normal" else _ret, RuntimeError("boom"))
            await proc.receive()

        p1 = node.spawn(parent, "crash")
        await wait_until(lambda: not node.is_alive(p1))
        p2 = node.spawn(parent, "normal")
        await asyncio.sleep(0.01)
        assert node.is_alive(p2)


async def _ret(proc: A.Process, *_: Any) -> None:
    return None


async def test_trap_exit_turns_signals_into_messages_except_kill() -> None:
    async with A.Node(log_crashes=False) as node:
        got: list[Any] = []

        async def trapper(proc: A.Process) -> None:
            proc.trap_exit = True
            child = proc.spawn_link(_crash, ValueError("bad"))
            got.append(await proc.receive())
            got.append(child)
            await proc.receive()

        pid = node.spawn(trapper)
        await wait_until(lambda: len(got) == 2)
        exit_msg, child = got
        assert isinstance(exit_msg, A.Exit) and exit_msg.pid == child
        assert isinstance(exit_msg.reason, ValueError)
        assert exit_msg.reason.__traceback__ is not None  # traceback kept
        node.exit(pid, "shutdown")  # trapped: becomes a message, still alive
        await asyncio.sleep(0)
        assert node.is_alive(pid)
        node.exit(pid, A.KILL)
        assert not node.is_alive(pid)
        assert node.process_count() == 0


async def test_killed_process_links_see_killed() -> None:
    async with A.Node() as node:
        got: list[Any] = []

        async def watcher(proc: A.Process, target: A.Pid) -> None:
            proc.trap_exit = True
            proc.link(target)
            got.append(await proc.receive())

        target = node.spawn(_idle)
        node.spawn(watcher, target)
        await asyncio.sleep(0)
        node.exit(target, A.KILL)
        await wait_until(lambda: got)
        assert got[0] == A.Exit(target, A.KILLED)


async def test_link_to_dead_pid_delivers_noproc() -> None:
    async with A.Node(log_crashes=False) as node:
        dead = node.spawn(_ret)
        await wait_until(lambda: not node.is_alive(dead))
        got: list[Any] = []

        async def trapping(proc: A.Process) -> None:
            proc.trap_exit = True
            proc.link(dead)
            got.append(await proc.receive())

        node.spawn(trapping)
        await wait_until(lambda: got)
        assert got[0] == A.Exit(dead, A.NOPROC)

        caught: list[Any] = []

        async def plain(proc: A.Process) -> None:
            # not trapping: Erlang's link/1 raises a catchable noproc error
            try:
                proc.link(dead)
            except A.NoProcess as exc:
                caught.append(exc.target)
            await proc.receive()

        p = node.spawn(plain)
        await wait_until(lambda: caught)
        assert caught == [dead]
        assert node.is_alive(p)
        assert node.process(p).mailbox_len == 0


async def test_monitor_sends_exactly_one_down_and_noproc_for_dead() -> None:
    async with A.Node(log_crashes=False) as node:
        got: list[Any] = []
        target = node.spawn(_idle)

        async def mon(proc: A.Process) -> None:
            r1 = proc.monitor(target)
            r2 = proc.monitor(target)
            got.append((r1, r2))
            got.append(await proc.receive())
            got.append(await proc.receive())
            try:
                got.append(await proc.receive(timeout=0.02))
            except A.ReceiveTimeout:
                got.append("no more")

        node.spawn(mon)
        await asyncio.sleep(0)
        node.send(target, "stop")
        await wait_until(lambda: len(got) == 4)
        (r1, r2), d1, d2, last = got
        assert {d1.ref, d2.ref} == {r1, r2}
        assert d1.reason == "normal" and d1.pid == target
        assert last == "no more"

        got.clear()

        async def mon_dead(proc: A.Process) -> None:
            ref = proc.monitor(target)
            got.append((ref, await proc.receive()))

        node.spawn(mon_dead)
        await wait_until(lambda: got)
        ref, down = got[0]
        assert down == A.Down(ref, target, A.NOPROC)


async def test_demonitor_with_flush_removes_queued_down() -> None:
    async with A.Node() as node:
        got: list[Any] = []

        async def body(proc: A.Process, target: A.Pid) -> None:
            ref = proc.monitor(target)
            proc.send(target, "stop")
            await asyncio.sleep(0.01)  # let the DOWN arrive
            got.append(proc.mailbox_len)
            proc.demonitor(ref, flush=True)
            got.append(proc.mailbox_len)

        node.spawn(body, node.spawn(_idle))
        await wait_until(lambda: len(got) == 2)
        assert got == [1, 0]


async def test_exit_normal_from_outside_is_ignored_unless_trapping() -> None:
    async with A.Node() as node:
        pid = node.spawn(_idle)
        node.exit(pid, "normal")
        await asyncio.sleep(0)
        assert node.is_alive(pid)
        node.exit(pid, "custom")
        assert not node.is_alive(pid)


async def test_long_link_chain_dies_without_recursion() -> None:
    async with A.Node(log_crashes=False) as node:
        first = node.spawn(_idle)
        prev = first
        pids = [first]

        async def linked(proc: A.Process, to: A.Pid) -> None:
            proc.link(to)
            await proc.receive()

        for _ in range(5000):
            prev = node.spawn(linked, prev)
            pids.append(prev)
        await asyncio.sleep(0)
        node.exit(first, "boom")
        assert node.process_count() == 0


async def test_suspend_queues_messages_until_resume() -> None:
    async with A.Node() as node:
        out: list[Any] = []
        pid = node.spawn(_collector, out, 2)
        await asyncio.sleep(0)
        node.suspend(pid)
        assert node.info(pid).status == "suspended"
        node.send(pid, 1)
        node.send(pid, 2)
        await asyncio.sleep(0.01)
        assert out == [] and node.info(pid).mailbox_len == 2
        node.resume(pid)
        await wait_until(lambda: out == [1, 2])


async def test_suspend_after_a_send_woke_the_process_keeps_the_message_queued() -> None:
    # the send wakes the waiting receive; the suspend comes before the process
    # runs again: the receive must not take the message until resume
    async with A.Node() as node:
        out: list[Any] = []
        pid = node.spawn(_collector, out, 2)
        await wait_until(lambda: node.info(pid).status == "waiting")
        node.send(pid, 1)
        node.suspend(pid)
        for _ in range(5):  # loop iterations in which the woken process would run
            await asyncio.sleep(0)
        assert out == [] and node.info(pid).mailbox_len == 1
        node.resume(pid)
        node.send(pid, 2)
        await wait_until(lambda: out == [1, 2])


async def test_receive_takes_match_and_timeout_positionally() -> None:
    async with A.Node() as node:
        got: list[Any] = []

        async def body(proc: A.Process) -> None:
            try:
                await proc.receive(None, 0)
            except A.ReceiveTimeout:
                got.append("timeout")
            got.append(await proc.receive(lambda m: m == "b", 5.0))
            got.append(await proc.receive())

        pid = node.spawn(body)
        await wait_until(lambda: got == ["timeout"])
        node.send(pid, "a")
        node.send(pid, "b")
        await wait_until(lambda: got == ["timeout", "b", "a"])


async def test_info_counts_messages_and_stack_has_file_line() -> None:
    async with A.Node() as node:
        echo = node.spawn(_echo, label="Echo")
        got: list[Any] = []

        async def client(proc: A.Process) -> None:
            for i in range(3):
                proc.send(echo, (proc.pid, i))
                got.append(await proc.receive())

        node.spawn(client)
        await wait_until(lambda: len(got) == 3)
        info = node.info(echo)
        assert (info.msgs_in, info.msgs_out, info.handled) == (3, 3, 3)
        assert info.label == "Echo" and info.status == "waiting"
        stack = node.stack(echo)
        assert stack[0].function == "_echo" and stack[0].filename.endswith("test_process.py")
        assert stack[-1].function == "Process.receive" and stack[-1].lineno > 0
        assert node.memory(echo) > 0


async def test_a_crashing_process_never_takes_the_node_down() -> None:
    async with A.Node(log_crashes=False) as node:
        for exc in (RuntimeError("x"), KeyboardInterrupt(), SystemExit(3), A.ProcessExit("bye")):
            pid = node.spawn(_crash, exc) if not isinstance(exc, KeyboardInterrupt | SystemExit) else None
            if pid is not None:
                await wait_until(lambda pid=pid: not node.is_alive(pid))
        ok = node.spawn(_idle)
        await asyncio.sleep(0)
        assert node.is_alive(ok)


async def test_send_after_delivers_later_and_can_be_cancelled() -> None:
    async with A.Node() as node:
        out: list[Any] = []
        pid = node.spawn(_collector, out, 1)
        cancelled = node.send_after(0.01, pid, "never")
        cancelled.cancel()
        node.send_after(0.02, pid, "later")
        assert out == []
        await wait_until(lambda: out == ["later"])


async def test_exited_event_carries_name_and_label() -> None:
    seen: list[A.Exited] = []

    class Rec(A.Instrument):
        def exited(self, event: A.Exited) -> None:
            seen.append(event)

    async with A.Node() as node:
        node.add_instrument(Rec())
        pid = node.spawn(_idle, name="door", label="Door")
        node.exit(pid, "bye")
        assert seen[0].name == "door" and seen[0].label == "Door" and seen[0].reason == "bye"


async def test_call_with_a_long_timeout_still_times_out() -> None:
    class Silent(A.GenServer):
        async def handle_call(self, request: Any, from_: A.From, state: Any) -> Any:
            return A.NoReply(state)  # never replies

    async with A.Node() as node:
        pid = await A.start_server(node, Silent)
        assert pid is not None
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(A.CallTimeout):
            await node.call(pid, "hello?", timeout=1.0)  # enforced by the node's sweeper
        assert 1.0 <= loop.time() - t0 < 3.0


async def test_a_server_calling_itself_fails_at_once() -> None:
    class Selfish(A.GenServer):
        async def handle_call(self, request: Any, from_: A.From, state: Any) -> Any:
            try:
                await self.proc.call(self.proc.pid, "again")
            except A.CallError as exc:
                return A.Reply(exc.reason, state)
            return A.Reply("no error", state)

    async with A.Node() as node:
        pid = await A.start_server(node, Selfish)
        assert pid is not None
        assert await node.call(pid, "go") == "calling_self"
