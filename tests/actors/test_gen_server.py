"""gen_server behaviour, modelled on OTP's gen_server_SUITE."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest

import actors as A
from tests.conftest import wait_until


class Counter(A.GenServer):
    """A small server used by most tests: a counter plus a log of terminate calls."""

    def __init__(self, log: list[Any] | None = None, *, trap: bool = False) -> None:
        self.log = log if log is not None else []
        self.trap = trap
        self.pending: list[A.From] = []

    async def init(self, *args: Any) -> Any:
        if self.trap:
            self.proc.trap_exit = True
        return args[0] if args else 0

    async def handle_call(self, request: Any, from_: A.From, state: Any) -> A.Reply | A.NoReply | A.Stop:
        match request:
            case "get":
                return A.Reply(state, state)
            case ("add", n):
                return A.Reply(state + n, state + n)
            case "defer":
                self.pending.append(from_)
                return A.NoReply(state)
            case ("stop", reason):
                return A.Stop(reason, state, reply="stopping")
            case ("stop_noreply", reason):
                return A.Stop(reason, state)
            case ("raise", exc):
                raise exc
            case ("sleep", secs):
                await asyncio.sleep(secs)
                return A.Reply("slept", state)
            case "block":
                await asyncio.Event().wait()
                return A.Reply("never", state)
            case "bad_return":
                return 42  # type: ignore[return-value]
        raise AssertionError(request)

    async def handle_cast(self, request: Any, state: Any) -> Any:
        match request:
            case ("add", n):
                return state + n
            case "release":
                for f in self.pending:
                    f.reply(("released", state))
                self.pending.clear()
                return state
            case ("stop", reason):
                return A.Stop(reason, state)
            case ("raise", exc):
                raise exc
        raise AssertionError(request)

    async def handle_info(self, msg: Any, state: Any) -> Any:
        match msg:
            case ("info_add", n):
                return state + n
            case ("stop", reason):
                return A.Stop(reason, state)
            case ("raise", exc):
                raise exc
        self.log.append(("info", msg))
        return state

    async def terminate(self, reason: Any, state: Any) -> None:
        self.log.append(("terminate", reason, state))


def _reason_of(node: A.Node, pid: A.Pid) -> Any:
    """Monitor-free way to read an exit reason: keep the Process record."""
    return node.process(pid)


# -- init -----------------------------------------------------------------------------


async def test_init_returning_state_starts_the_server() -> None:
    async with A.Node() as node:
        pid = await A.start_server(node, Counter, 7)
        assert pid is not None and node.is_alive(pid)
        assert await node.call(pid, "get") == 7
        assert await A.get_state(node, pid) == 7


async def test_init_returning_ignore_returns_none_and_process_exits_normal() -> None:
    class Ignoring(A.GenServer):
        async def init(self, *args: Any) -> Any:
            return A.Ignore()

    async with A.Node() as node:
        before = node.process_count()
        assert await A.start_server(node, Ignoring) is None
        await wait_until(lambda: node.process_count() == before)


async def test_init_returning_stop_raises_starterror_with_reason() -> None:
    class Stopping(A.GenServer):
        async def init(self, *args: Any) -> Any:
            return A.Stop("no_way")

    async with A.Node() as node:
        with pytest.raises(A.StartError) as ei:
            await A.start_server(node, Stopping)
        assert ei.value.reason == "no_way"
        await wait_until(lambda: node.process_count() == 0)


async def test_init_raising_fails_start_link_without_killing_the_starter() -> None:
    err = RuntimeError("bad init")

    class Raising(A.GenServer):
        async def init(self, *args: Any) -> Any:
            raise err

    result: list[Any] = []

    async def starter(proc: A.Process) -> None:
        # does not trap exits: a link signal from the failed server would kill it
        try:
            await A.start_link(proc, Raising)
        except A.StartError as exc:
            result.append(exc.reason)
        await asyncio.sleep(0)
        result.append("still alive")
        await proc.receive()

    async with A.Node(log_crashes=False) as node:
        pid = node.spawn(starter)
        await wait_until(lambda: len(result) == 2)
        assert result == [err, "still alive"]
        assert node.is_alive(pid)
        assert node.process_count() == 1


async def test_init_timeout_kills_the_server_and_raises_starterror() -> None:
    class Slow(A.GenServer):
        async def init(self, *args: Any) -> Any:
            await asyncio.Event().wait()

    async with A.Node() as node:
        with pytest.raises(A.StartError) as ei:
            await A.start_server(node, Slow, timeout=0.02)
        assert ei.value.reason == "timeout"
        await wait_until(lambda: node.process_count() == 0)


async def test_a_start_with_no_time_fails_at_once_and_a_cancelled_starter_leaves_the_server_running() -> None:
    # timeout=0, as wait_for's: no time to start in, even for an init that returns at once
    async with A.Node() as node:
        with pytest.raises(A.StartError) as ei:
            await A.start_server(node, A.GenServer, timeout=0)
        assert ei.value.reason == "timeout"
        await wait_until(lambda: node.process_count() == 0)

        # the starter cancelled while the server inits: the server goes on and starts
        go = asyncio.Event()

        class Gated(A.GenServer):
            async def init(self, *args: Any) -> Any:
                await go.wait()
                return "ready"

        starter = asyncio.ensure_future(A.start_server(node, Gated, name="gated"))
        await wait_until(lambda: node.whereis("gated") is not None)
        starter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await starter
        go.set()
        assert await A.get_state(node, "gated") == "ready"


async def test_start_returns_when_server_is_killed_during_init() -> None:
    in_init = asyncio.Event()

    class Slow(A.GenServer):
        async def init(self, *args: Any) -> Any:
            in_init.set()
            await asyncio.Event().wait()

    async with A.Node() as node:
        task = asyncio.ensure_future(A.start_server(node, Slow, timeout=None))
        await in_init.wait()
        [pid] = node.processes()
        node.exit(pid, A.KILL)
        with pytest.raises(A.StartError):
            await asyncio.wait_for(task, 2)


async def test_start_returns_when_server_is_killed_before_it_ran() -> None:
    """The starter must not hang (even with no timeout) if the server dies
    before its body ever ran, so before init could acknowledge anything."""
    async with A.Node() as node:
        task = asyncio.ensure_future(A.start_server(node, Counter, timeout=None))
        await asyncio.sleep(0)  # start_server spawned the server; its body has not run
        [pid] = node.processes()
        assert node.process(pid).handled == 0
        node.exit(pid, A.KILL)
        with pytest.raises(A.StartError) as ei:
            await asyncio.wait_for(task, 2)
        assert ei.value.reason == A.KILLED


async def test_registered_name_is_taken_and_freed() -> None:
    async with A.Node() as node:
        pid = await A.start_server(node, Counter, name="counter")
        assert node.whereis("counter") == pid
        assert await node.call("counter", ("add", 2)) == 2
        with pytest.raises(A.NameTaken):
            await A.start_server(node, Counter, name="counter")
        await A.stop_server(node, "counter")
        assert node.whereis("counter") is None


# -- call -------------------------------------------------------------------------------


async def test_call_default_timeout_is_five_seconds() -> None:
    for fn in (A.Node.call, A.Process.call, A.get_state, A.stop_server):
        assert inspect.signature(fn).parameters["timeout"].default == 5.0


async def test_call_times_out_with_calltimeout_and_server_survives() -> None:
    async with A.Node() as node:
        pid = await A.start_server(node, Counter)
        assert pid is not None
        with pytest.raises(A.CallTimeout) as ei:
            await node.call(pid, ("sleep", 0.2), timeout=0.01)
        assert isinstance(ei.value, TimeoutError)
        assert ei.value.timeout == 0.01
        # the late reply is dropped; the server goes on
        assert await node.call(pid, "get") == 0


async def test_call_to_dead_server_raises_serverdied_noproc() -> None:
    async with A.Node() as node:
        pid = await A.start_server(node, Counter)
        assert pid is not None
        await A.stop_server(node, pid)
        with pytest.raises(A.ServerDied) as ei:
            await node.call(pid, "get")
        assert ei.value.reason == A.NOPROC
        with pytest.raises(A.ServerDied):
            await node.call("no_such_name", "get")


async def test_call_raises_serverdied_when_server_dies_mid_call() -> None:
    async with A.Node() as node:
        pid = await A.start_server(node, Counter)
        assert pid is not None
        call = asyncio.ensure_future(node.call(pid, "block", timeout=None))
        await wait_until(lambda: node.process(pid).handled == 1)
        node.exit(pid, "boom")
        with pytest.raises(A.ServerDied) as ei:
            await call
        assert ei.value.reason == "boom"


async def test_call_from_a_process_to_a_crashing_server_raises_serverdied() -> None:
    err = ValueError("oops")
    got: list[Any] = []

    async def client(proc: A.Process, server: A.Pid) -> None:
        try:
            await proc.call(server, ("raise", err))
        except A.ServerDied as exc:
            got.append(exc.reason)

    async with A.Node(log_crashes=False) as node:
        pid = await A.start_server(node, Counter)
        assert pid is not None
        node.spawn(client, pid)
        await wait_until(lambda: got)
        assert got == [err]


async def test_deferred_reply_with_noreply_and_from_reply() -> None:
    async with A.Node() as node:
        pid = await A.start_server(node, Counter, 3)
        assert pid is not None
        calls = [asyncio.ensure_future(node.call(pid, "defer")) for _ in range(2)]
        # the server is free while the replies are pending
        assert await node.call(pid, ("add", 1)) == 4
        assert not any(c.done() for c in calls)
        node.cast(pid, "release")
        assert await asyncio.gather(*calls) == [("released", 4), ("released", 4)]


async def test_handle_call_bad_return_crashes_server_with_typeerror() -> None:
    async with A.Node(log_crashes=False) as node:
        log: list[Any] = []
        pid = await A.start_server(node, Counter(log))
        assert pid is not None
        proc = node.process(pid)
        with pytest.raises(A.ServerDied) as ei:
            await node.call(pid, "bad_return")
        assert isinstance(ei.value.reason, TypeError)
        assert proc.exit_reason is ei.value.reason
        assert log[-1][0] == "terminate"


# -- cast and info ------------------------------------------------------------------------


async def test_cast_updates_state_without_reply() -> None:
    async with A.Node() as node:
        pid = await A.start_server(node, Counter)
        assert pid is not None
        node.cast(pid, ("add", 5))
        node.cast(pid, ("add", 6))
        assert await node.call(pid, "get") == 11


async def test_cast_to_dead_server_is_dropped() -> None:
    async with A.Node() as node:
        pid = await A.start_server(node, Counter)
        assert pid is not None
        await A.stop_server(node, pid)
        node.cast(pid, ("add", 1))  # no error
        assert not node.is_alive(pid)


async def test_handle_info_gets_plain_messages() -> None:
    async with A.Node() as node:
        log: list[Any] = []
        pid = await A.start_server(node, Counter(log))
        assert pid is not None
        node.send(pid, ("info_add", 4))
        node.send(pid, "hello")
        assert await node.call(pid, "get") == 4
        assert log == [("info", "hello")]


# -- stopping ---------------------------------------------------------------------------------


@pytest.mark.parametrize("via", ["call", "call_noreply", "cast", "info"])
async def test_stop_from_each_callback_calls_terminate_with_reason(via: str) -> None:
    async with A.Node() as node:
        log: list[Any] = []
        pid = await A.start_server(node, Counter(log), 9)
        assert pid is not None
        proc = node.process(pid)
        reason = ("shutdown", via)
        if via == "call":
            assert await node.call(pid, ("stop", reason)) == "stopping"
        elif via == "call_noreply":
            with pytest.raises(A.ServerDied) as ei:
                await node.call(pid, ("stop_noreply", reason))
            assert ei.value.reason == reason
        elif via == "cast":
            node.cast(pid, ("stop", reason))
        else:
            node.send(pid, ("stop", reason))
        await wait_until(lambda: not proc.alive)
        assert proc.exit_reason == reason
        assert log == [("terminate", reason, 9)]


async def test_stop_reply_is_sent_after_terminate_ran() -> None:
    """OTP: ``{stop, Reason, Reply, State}`` runs terminate, then replies."""
    seen: list[Any] = []

    class Slow(Counter):
        async def terminate(self, reason: Any, state: Any) -> None:
            await asyncio.sleep(0)
            seen.append("terminated")

    async with A.Node() as node:
        pid = await A.start_server(node, Slow)
        assert pid is not None
        assert await node.call(pid, ("stop", "normal")) == "stopping"
        assert seen == ["terminated"]


@pytest.mark.parametrize("via", ["call", "cast", "info"])
async def test_exception_in_handler_calls_terminate_then_exits_with_it(via: str) -> None:
    err = KeyError("lost")
    async with A.Node(log_crashes=False) as node:
        log: list[Any] = []
        pid = await A.start_server(node, Counter(log), 1)
        assert pid is not None
        proc = node.process(pid)
        if via == "call":
            with pytest.raises(A.ServerDied):
                await node.call(pid, ("raise", err))
        elif via == "cast":
            node.cast(pid, ("raise", err))
        else:
            node.send(pid, ("raise", err))
        await wait_until(lambda: not proc.alive)
        assert proc.exit_reason is err
        assert log == [("terminate", err, 1)]


async def test_process_exit_in_handler_is_the_exit_reason_given_to_terminate() -> None:
    class Exiting(Counter):
        async def handle_cast(self, request: Any, state: Any) -> Any:
            self.proc.exit(("shutdown", "bye"))

    async with A.Node() as node:
        log: list[Any] = []
        pid = await A.start_server(node, Exiting(log))
        assert pid is not None
        proc = node.process(pid)
        node.cast(pid, "x")
        await wait_until(lambda: not proc.alive)
        assert proc.exit_reason == ("shutdown", "bye")
        assert log == [("terminate", ("shutdown", "bye"), 0)]


async def test_terminate_raising_becomes_the_exit_reason() -> None:
    """OTP: a terminate that crashes makes its crash the exit reason (changed
    on purpose: the original reason used to be kept)."""
    err = RuntimeError("terminate failed")

    class BadTerminate(Counter):
        async def terminate(self, reason: Any, state: Any) -> None:
            raise err

    async with A.Node(log_crashes=False) as node:
        pid = await A.start_server(node, BadTerminate)
        assert pid is not None
        proc = node.process(pid)
        await A.stop_server(node, pid, "done")
        assert proc.exit_reason is err


async def test_stop_server_runs_terminate_and_waits_for_exit() -> None:
    async with A.Node() as node:
        log: list[Any] = []
        pid = await A.start_server(node, Counter(log), 2)
        assert pid is not None
        proc = node.process(pid)
        await A.stop_server(node, pid, ("shutdown", "test"))
        assert not proc.alive
        assert proc.exit_reason == ("shutdown", "test")
        assert log == [("terminate", ("shutdown", "test"), 2)]
        with pytest.raises(A.NoProcess):
            await A.stop_server(node, pid)


async def test_stop_server_times_out_on_a_busy_server() -> None:
    async with A.Node() as node:
        pid = await A.start_server(node, Counter)
        assert pid is not None
        busy = asyncio.ensure_future(node.call(pid, "block", timeout=None))
        await wait_until(lambda: node.process(pid).handled == 1)
        with pytest.raises(A.CallTimeout):
            await A.stop_server(node, pid, timeout=0.02)
        node.exit(pid, A.KILL)
        with pytest.raises(A.ServerDied):
            await busy


async def test_get_state_is_bounded_by_timeout_when_server_is_busy() -> None:
    async with A.Node() as node:
        pid = await A.start_server(node, Counter, 5)
        assert pid is not None
        busy = asyncio.ensure_future(node.call(pid, ("sleep", 0.1)))
        await wait_until(lambda: node.process(pid).handled == 1)
        with pytest.raises(A.CallTimeout):
            await A.get_state(node, pid, timeout=0.01)
        assert await busy == "slept"
        assert await A.get_state(node, pid) == 5


async def test_get_state_of_dead_server_raises_noprocess() -> None:
    async with A.Node() as node:
        with pytest.raises(A.NoProcess):
            await A.get_state(node, A.Pid(0, 999))


async def test_get_state_raises_serverdied_when_server_dies_before_answering() -> None:
    async with A.Node() as node:
        pid = await A.start_server(node, Counter)
        assert pid is not None
        busy = asyncio.ensure_future(node.call(pid, "block", timeout=None))
        await wait_until(lambda: node.process(pid).handled == 1)
        state = asyncio.ensure_future(A.get_state(node, pid, timeout=None))
        await asyncio.sleep(0)
        node.exit(pid, "boom")
        with pytest.raises(A.ServerDied):
            await state
        with pytest.raises(A.ServerDied):
            await busy


# -- exit signals ---------------------------------------------------------------------------------


async def test_trapping_server_terminates_on_exit_signal_from_parent() -> None:
    log: list[Any] = []
    started: list[A.Pid] = []

    async def parent(proc: A.Process) -> None:
        pid = await A.start_link(proc, Counter(log, trap=True), 4)
        assert pid is not None
        started.append(pid)
        await proc.receive()
        proc.exit("parent_quit")

    async with A.Node() as node:
        ppid = node.spawn(parent)
        await wait_until(lambda: started)
        server = node.process(started[0])
        node.send(ppid, "go")
        await wait_until(lambda: not server.alive)
        assert server.exit_reason == "parent_quit"
        assert log == [("terminate", "parent_quit", 4)]


async def test_trapping_server_gets_exit_from_non_parent_in_handle_info() -> None:
    async with A.Node() as node:
        log: list[Any] = []
        pid = await A.start_server(node, Counter(log, trap=True))
        assert pid is not None
        other = A.Pid(0, 12345)
        node.exit(pid, "whatever", sender=other)
        assert await node.call(pid, "get") == 0
        assert log == [("info", A.Exit(other, "whatever"))]


async def test_non_trapping_server_is_killed_by_exit_signal_without_terminate() -> None:
    async with A.Node() as node:
        log: list[Any] = []
        pid = await A.start_server(node, Counter(log))
        assert pid is not None
        proc = node.process(pid)
        node.exit(pid, "bye")
        await wait_until(lambda: not proc.alive)
        assert proc.exit_reason == "bye"
        assert log == []


async def test_top_level_trapping_server_terminates_on_node_shutdown() -> None:
    log: list[Any] = []
    async with A.Node() as node:
        pid = await A.start_server(node, Counter(log, trap=True), 1)
        assert pid is not None
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await node.shutdown()
        assert loop.time() - t0 < 1.0  # not the 5 s kill fallback
    assert log == [("terminate", A.SHUTDOWN, 1)]


async def test_child_spec_starts_server_under_a_supervisor() -> None:
    async with A.Node() as node:
        sup = await A.start_supervisor(node, [Counter.child_spec(10, id="c")])
        [row] = await A.which_children(node, sup)
        assert row.id == "c" and row.pid is not None
        assert await node.call(row.pid, "get") == 10


async def test_node_shutdown_stops_a_server_linked_to_a_plain_parent_through_the_parent() -> None:
    log: list[Any] = []
    started: list[A.Pid] = []

    async def parent(proc: A.Process) -> None:
        pid = await A.start_link(proc, Counter(log, trap=True), 3)
        assert pid is not None
        started.append(pid)
        await proc.receive()

    async with A.Node() as node:
        node.spawn(parent)
        await wait_until(lambda: started)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await node.shutdown()
        assert loop.time() - t0 < 1.0  # not the 5 s kill fallback
    assert log == [("terminate", A.SHUTDOWN, 3)]
