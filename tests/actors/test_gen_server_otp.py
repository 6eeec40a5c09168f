"""gen_server fidelity to OTP (issue #16), in the manner of OTP's gen_server_SUITE:
start under a taken name, stop with a bad timeout, error reports, fire-and-forget
cast, terminate failing after a stop with a reply, start timeouts; handle_continue,
callback timeouts, hibernate, start_monitor, send_request and its friends."""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import weakref
from typing import Any

import pytest

import actors as A
from tests.conftest import wait_until


class Script(A.GenServer):
    """A server whose callbacks do what the request says, and log what ran."""

    def __init__(self, init_result: Any = 0) -> None:
        self.init_result = init_result
        self.log: list[Any] = []

    async def init(self, *args: Any) -> Any:
        self.log.append("init")
        return self.init_result

    async def handle_call(self, request: Any, from_: A.From, state: Any) -> Any:
        self.log.append(("call", request))
        match request:
            case "get":
                return A.Reply(state, state)
            case ("reply_then", then):
                return A.Reply("ok", state, then=then)
            case ("stop", reason, reply):
                return A.Stop(reason, state, reply=reply)
            case ("raise", exc):
                raise exc
        return A.Reply(request, state)

    async def handle_cast(self, request: Any, state: Any) -> Any:
        self.log.append(("cast", request))
        match request:
            case ("then", then):
                return A.NoReply(state, then=then)
            case ("set", value):
                return value
            case ("stop", reason):
                return A.Stop(reason, state)
            case ("raise", exc):
                raise exc
            case ("exit", reason):
                self.proc.exit(reason)
        return state

    async def handle_info(self, msg: Any, state: Any) -> Any:
        self.log.append(("info", msg))
        return state

    async def handle_continue(self, term: Any, state: Any) -> Any:
        self.log.append(("continue", term))
        match term:
            case ("again", then):
                return A.NoReply(state, then=then)
            case ("stop", reason):
                return A.Stop(reason, state)
        return state

    async def terminate(self, reason: Any, state: Any) -> None:
        self.log.append(("terminate", reason))


async def _start(node: A.Node, server: A.GenServer, *args: Any, **kw: Any) -> A.Pid:
    pid = await A.start_server(node, server, *args, **kw)
    assert pid is not None
    return pid


# -- start -------------------------------------------------------------------------------


async def test_start_under_a_taken_name_raises_already_started_with_the_holders_pid() -> None:
    async with A.Node() as node:
        holder = await _start(node, Script(), name="srv")
        with pytest.raises(A.NameTaken) as ei:
            await A.start_server(node, Script(), name="srv")
        assert ei.value.pid == holder
        assert ei.value.name == "srv"
        assert str(holder) in str(ei.value)
        assert node.process_count() == 1


async def test_start_timeout_leaves_no_future_exception_unretrieved() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, ctx: reported.append(ctx))

    class Slow(A.GenServer):
        async def init(self, *args: Any) -> Any:
            await asyncio.Event().wait()

    try:
        async with A.Node() as node:
            reasons = []
            try:
                await A.start_server(node, Slow, timeout=0.01)
            except A.StartError as exc:
                reasons.append(exc.reason)  # the exception (and its frames) not kept beyond here
            assert reasons == ["timeout"]
            await wait_until(lambda: node.process_count() == 0)
            for _ in range(3):
                await asyncio.sleep(0)  # let the dead task's callbacks run
        gc.collect()
    finally:
        loop.set_exception_handler(None)
    assert [c.get("message") for c in reported] == []


async def test_a_failed_init_frees_the_name_before_the_starter_hears_of_it() -> None:
    class Refuses(A.GenServer):
        async def init(self, *args: Any) -> Any:
            return A.Stop("no")

    async with A.Node() as node:
        with pytest.raises(A.StartError):
            await A.start_server(node, Refuses, name="srv")
        # no wait: the name is free at once (OTP unregisters before the nack)
        assert await A.start_server(node, Script(), name="srv") is not None


async def test_server_keeps_no_reference_to_its_start_arguments() -> None:
    class Arg:
        pass

    class Forgets(A.GenServer):
        async def init(self, *args: Any) -> Any:
            return "state"

    arg = Arg()
    ref = weakref.ref(arg)
    async with A.Node() as node:
        pid = await _start(node, Forgets(), arg)
        del arg
        gc.collect()
        assert ref() is None
        assert await A.get_state(node, pid) == "state"


async def test_bad_start_timeout_raises_before_anything_is_spawned() -> None:
    async with A.Node() as node:
        with pytest.raises(ValueError):
            await A.start_server(node, Script(), timeout=-1)
        assert node.process_count() == 0


# -- stop --------------------------------------------------------------------------------


@pytest.mark.parametrize(("timeout", "error"), [("soon", TypeError), (-1, ValueError), (math.nan, ValueError)])
async def test_stop_with_an_invalid_timeout_raises_and_the_server_lives(timeout: Any, error: type) -> None:
    async with A.Node() as node:
        server = Script()
        pid = await _start(node, server)
        with pytest.raises(error):
            await A.stop_server(node, pid, "normal", timeout=timeout)
        assert node.is_alive(pid)
        assert node.process(pid).mailbox_len == 0
        assert await node.call(pid, "get") == 0
        assert ("terminate", "normal") not in server.log


async def test_a_server_stopping_itself_with_stop_fails_with_calling_self() -> None:
    class SelfStopper(Script):
        async def handle_cast(self, request: Any, state: Any) -> Any:
            try:
                await A.stop_server(self.proc.node, self.proc.pid)
            except A.CallError as exc:
                self.log.append(exc.reason)
            return state

    async with A.Node() as node:
        server = SelfStopper()
        pid = await _start(node, server)
        node.cast(pid, "stop yourself")
        assert await node.call(pid, "get") == 0
        assert "calling_self" in server.log


async def test_the_error_report_of_a_huge_state_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="actors")
    async with A.Node() as node:
        pid = await _start(node, Script({i: "x" * 100 for i in range(100_000)}))
        proc = node.process(pid)
        node.cast(pid, ("stop", "bad"))
        await wait_until(lambda: not proc.alive)
    [record] = [r for r in caplog.records if "terminating" in r.getMessage()]
    assert len(record.getMessage()) < 5_000
    assert "When server state == {0: 'xxx" in record.getMessage()


async def test_call_with_an_invalid_timeout_raises_before_sending() -> None:
    async with A.Node() as node:
        server = Script()
        pid = await _start(node, server)
        with pytest.raises(ValueError):
            await node.call(pid, "x", timeout=-0.5)
        assert node.process(pid).mailbox_len == 0
        assert server.log == ["init"]


@pytest.mark.parametrize("how", ["raise", "exit"])
async def test_terminate_failing_after_stop_with_reply_still_replies_and_exits_with_its_reason(
    how: str, caplog: pytest.LogCaptureFixture
) -> None:
    err = RuntimeError("terminate broke")

    class BadTerminate(Script):
        async def terminate(self, reason: Any, state: Any) -> None:
            if how == "raise":
                raise err
            self.proc.exit(("terminate_exit", reason))

    caplog.set_level(logging.ERROR, logger="actors")
    async with A.Node() as node:
        pid = await _start(node, BadTerminate(), name="fragile")
        proc = node.process(pid)
        assert await node.call(pid, ("stop", "normal", "bye")) == "bye"
        await wait_until(lambda: not proc.alive)
        expected = err if how == "raise" else ("terminate_exit", "normal")
        assert proc.exit_reason == expected
    [record] = [r for r in caplog.records if "terminating" in r.getMessage()]
    assert "fragile" in record.getMessage() and str(pid) in record.getMessage()


# -- error reports -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (("raise", KeyError("lost")), "KeyError: 'lost'"),
        (("stop", ("bad_thing", 42)), "('bad_thing', 42)"),
        (("exit", "oops"), "oops"),
    ],
)
async def test_every_abnormal_exit_logs_an_error_report_with_last_message_and_state(
    request_: Any, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="actors")
    async with A.Node() as node:
        pid = await _start(node, Script({"orders": 3}), name="orders")
        proc = node.process(pid)
        node.cast(pid, request_)
        await wait_until(lambda: not proc.alive)
    [record] = [r for r in caplog.records if "terminating" in r.getMessage()]
    text = record.getMessage()
    assert f"{pid} (orders)" in text
    assert f"Last message in was (cast): {request_!r}" in text
    assert "When server state == {'orders': 3}" in text
    assert f"Reason for termination == {reason}" in text


@pytest.mark.parametrize("reason", ["normal", "shutdown", ("shutdown", "done")])
async def test_normal_and_shutdown_exits_log_nothing(reason: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="actors")
    async with A.Node() as node:
        pid = await _start(node, Script())
        proc = node.process(pid)
        node.cast(pid, ("stop", reason))
        await wait_until(lambda: not proc.alive)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_a_process_killed_by_a_signal_logs_no_error_report(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="actors")
    async with A.Node() as node:
        pid = await _start(node, Script())
        proc = node.process(pid)
        node.exit(pid, ValueError("from outside"))
        await wait_until(lambda: not proc.alive)
    assert caplog.records == []


# -- cast ---------------------------------------------------------------------------------


async def test_cast_to_an_unregistered_name_is_fire_and_forget() -> None:
    done: list[Any] = []

    async def caster(proc: A.Process) -> None:
        proc.cast("nobody", "hello")
        done.append("ok")

    async with A.Node() as node:
        assert node.cast("nobody", "hello") is None
        node.spawn(caster)
        await wait_until(lambda: done)


# -- replies count as messages out ---------------------------------------------------------------


async def test_replies_count_in_the_servers_msgs_out() -> None:
    async with A.Node() as node:
        pid = await _start(node, Script())
        for i in range(3):
            assert await node.call(pid, i) == i
        assert await A.get_state(node, pid) == 0
        assert node.info(pid).msgs_out == 4


# -- handle_continue -----------------------------------------------------------------------------


async def test_continue_from_init_runs_before_any_message() -> None:
    async with A.Node() as node:
        server = Script(A.NoReply(0, then=A.Continue("load")))
        pid = await _start(node, server)
        node.send(pid, "first message")
        await node.call(pid, "get")
        assert server.log == ["init", ("continue", "load"), ("info", "first message"), ("call", "get")]


async def test_continue_from_a_callback_runs_before_the_next_message_and_can_chain() -> None:
    async with A.Node() as node:
        server = Script()
        pid = await _start(node, server)
        node.cast(pid, ("then", A.Continue(("again", A.Continue("last")))))
        node.send(pid, "queued")
        await node.call(pid, "get")
        assert server.log[1:] == [
            ("cast", ("then", A.Continue(("again", A.Continue("last"))))),
            ("continue", ("again", A.Continue("last"))),
            ("continue", "last"),
            ("info", "queued"),
            ("call", "get"),
        ]


async def test_stop_from_handle_continue_runs_terminate() -> None:
    async with A.Node() as node:
        server = Script()
        pid = await _start(node, server)
        proc = node.process(pid)
        node.cast(pid, ("then", A.Continue(("stop", ("shutdown", "cont")))))
        await wait_until(lambda: not proc.alive)
        assert proc.exit_reason == ("shutdown", "cont")
        assert server.log[-1] == ("terminate", ("shutdown", "cont"))


# -- callback timeouts ---------------------------------------------------------------------------


async def test_a_callback_timeout_delivers_timeout_to_handle_info() -> None:
    async with A.Node() as node:
        server = Script()
        pid = await _start(node, server)
        node.cast(pid, ("then", 0.01))
        await wait_until(lambda: ("info", A.TIMEOUT) in server.log)
        assert node.is_alive(pid)


async def test_a_timeout_in_init_and_in_a_reply_fires_when_no_message_comes() -> None:
    async with A.Node() as node:
        server = Script(A.NoReply(0, then=0))
        pid = await _start(node, server)
        await wait_until(lambda: ("info", A.TIMEOUT) in server.log)
        assert await node.call(pid, ("reply_then", 0)) == "ok"
        await wait_until(lambda: server.log.count(("info", A.TIMEOUT)) == 2)


async def test_a_message_already_queued_cancels_the_timeout() -> None:
    async with A.Node() as node:
        server = Script()
        pid = await _start(node, server)
        node.cast(pid, ("then", 0))  # timeout 0: fires only if the mailbox is empty...
        node.cast(pid, "next")  # ...and it is not
        await node.call(pid, "get")
        assert ("info", A.TIMEOUT) not in server.log
        assert server.log[-2:] == [("cast", "next"), ("call", "get")]


async def test_a_system_message_restarts_a_pending_timeout_and_leaves_no_phantom_one() -> None:
    async with A.Node() as node:
        server = Script()
        pid = await _start(node, server)
        node.cast(pid, ("then", 0.02))
        assert await A.get_state(node, pid) == 0  # answered while the timeout is pending...
        await wait_until(lambda: ("info", A.TIMEOUT) in server.log)  # ...which still fires
        node.cast(pid, ("then", 0))
        await wait_until(lambda: server.log.count(("info", A.TIMEOUT)) == 2)
        # no timeout is pending now: a system message must not bring the old one back
        assert await A.get_state(node, pid) == 0
        assert await node.call(pid, "get") == 0
        assert server.log.count(("info", A.TIMEOUT)) == 2


async def test_a_bad_action_crashes_the_server_through_terminate() -> None:
    async with A.Node(log_crashes=False) as node:
        server = Script()
        pid = await _start(node, server)
        proc = node.process(pid)
        node.cast(pid, ("then", "soon"))
        await wait_until(lambda: not proc.alive)
        assert isinstance(proc.exit_reason, TypeError)
        assert server.log[-1] == ("terminate", proc.exit_reason)


# -- hibernate -----------------------------------------------------------------------------------


async def test_hibernate_gives_back_the_mailbox_buffer_and_the_server_serves_on() -> None:
    async with A.Node() as node:
        server = Script()
        pid = await _start(node, server)
        proc = node.process(pid)
        node.cast(pid, ("then", A.HIBERNATE))
        # white box: the empty mailbox's deque is what a hibernating server gives back
        await wait_until(lambda: proc._mb is None)
        assert await node.call(pid, "get") == 0


# -- start_monitor -------------------------------------------------------------------------------


async def test_start_monitor_returns_the_pid_and_a_monitor_that_reports_the_exit() -> None:
    got: list[Any] = []

    async def owner(proc: A.Process) -> None:
        started = await A.start_monitor(proc, Script())
        assert started is not None
        pid, ref = started
        got.append(pid)
        got.append(await proc.receive())
        got.append(ref)

    async with A.Node() as node:
        node.spawn(owner)
        await wait_until(lambda: got)
        server = got[0]
        info = node.info(server)
        assert info.links == ()  # monitored, not linked
        assert len(info.monitored_by) == 1
        node.cast(server, ("stop", "bye"))
        await wait_until(lambda: len(got) == 3)
        down, ref = got[1], got[2]
        assert down == A.Down(ref, server, "bye")


async def test_start_monitor_of_a_failing_init_raises_and_leaves_a_down_in_the_mailbox() -> None:
    got: list[Any] = []

    class Refuses(A.GenServer):
        async def init(self, *args: Any) -> Any:
            return A.Stop("refused")

    async def owner(proc: A.Process) -> None:
        try:
            await A.start_monitor(proc, Refuses)
        except A.StartError as exc:
            got.append(exc.reason)
        got.append(await proc.receive())

    async with A.Node() as node:
        node.spawn(owner)
        await wait_until(lambda: len(got) == 2)
        assert got[0] == "refused"
        assert type(got[1]) is A.Down and got[1].reason == "refused"


# -- send_request and friends --------------------------------------------------------------------


async def _in_process(node: A.Node, body: Any) -> Any:
    """Run ``body(proc)`` in a fresh process; return what it returns (or raise what it raises)."""
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def runner(proc: A.Process) -> None:
        try:
            fut.set_result(await body(proc))
        except Exception as exc:
            fut.set_exception(exc)

    node.spawn(runner)
    return await asyncio.wait_for(fut, 5)


async def test_send_request_then_wait_response_gets_the_reply_and_counts_a_message_out() -> None:
    async with A.Node() as node:
        pid = await _start(node, Script())

        async def body(proc: A.Process) -> Any:
            req = A.send_request(proc, pid, "ping")
            out = await A.wait_response(proc, req, timeout=1)
            return out, proc.msgs_out, proc.mailbox_len

        assert await _in_process(node, body) == ("ping", 1, 0)


async def test_wait_response_timeout_keeps_the_request_and_receive_response_abandons_it() -> None:
    async with A.Node() as node:
        gate = asyncio.Event()

        class Slow(Script):
            async def handle_call(self, request: Any, from_: A.From, state: Any) -> Any:
                await gate.wait()
                return A.Reply(request, state)

        pid = await _start(node, Slow())

        async def body(proc: A.Process) -> Any:
            kept = A.send_request(proc, pid, "kept")
            with pytest.raises(A.CallTimeout):
                await A.wait_response(proc, kept, timeout=0)
            dropped = A.send_request(proc, pid, "dropped")
            with pytest.raises(A.CallTimeout):
                await A.receive_response(proc, dropped, timeout=0)
            gate.set()
            first = await A.wait_response(proc, kept, timeout=1)
            await node.call(pid, "sync")  # the dropped request has been answered by now
            return first, proc.mailbox_len

        assert await _in_process(node, body) == ("kept", 0)


async def test_check_response_tells_the_reply_the_down_and_other_messages_apart() -> None:
    async with A.Node(log_crashes=False) as node:
        pid = await _start(node, Script())

        async def body(proc: A.Process) -> Any:
            req = A.send_request(proc, pid, "hello")
            proc.send(proc.pid, "unrelated")
            first = await proc.receive()
            reply = await proc.receive()
            out = [A.check_response(proc, first, req), A.check_response(proc, reply, req)]
            doomed = A.send_request(proc, pid, ("raise", ValueError("dead")))
            down = await proc.receive(lambda m: type(m) is A.Down)
            with pytest.raises(A.ServerDied) as ei:
                A.check_response(proc, down, doomed)
            out.append(type(ei.value.reason))
            return out

        assert await _in_process(node, body) == [A.NO_REPLY, "hello", ValueError]


async def test_a_request_to_a_dead_server_answers_serverdied_noproc() -> None:
    async with A.Node() as node:

        async def body(proc: A.Process) -> Any:
            req = A.send_request(proc, "nobody", "x")
            with pytest.raises(A.ServerDied) as ei:
                await A.wait_response(proc, req, timeout=1)
            return ei.value.reason

        assert await _in_process(node, body) == A.NOPROC


async def test_a_request_id_collection_answers_each_request_with_its_label() -> None:
    async with A.Node(log_crashes=False) as node:
        a = await _start(node, Script())
        b = await _start(node, Script())

        async def body(proc: A.Process) -> Any:
            reqs = A.RequestIds()
            reqs.add(A.send_request(proc, a, "from a"), "a")
            reqs.add(A.send_request(proc, b, ("raise", KeyError("b"))), "b")
            reqs.add(A.send_request(proc, "nobody", "x"), "nobody")
            assert len(reqs) == 3 and [label for _, label in reqs] == ["a", "b", "nobody"]
            seen = {}
            while (resp := await reqs.wait_response(proc, timeout=1)) is not None:
                seen[resp.label] = resp.value if resp.error is None else resp.error.reason
            return seen, len(reqs)

        seen, left = await _in_process(node, body)
        assert left == 0
        assert seen["a"] == "from a"
        assert isinstance(seen["b"], KeyError)
        assert seen["nobody"] == A.NOPROC


# -- exit signals and names ---------------------------------------------------------------------


async def test_exit_self_normal_terminates_a_non_trapping_caller_with_normal() -> None:
    after: list[Any] = []

    async def quitter(proc: A.Process) -> None:
        proc.node.exit(proc.pid, A.NORMAL)
        after.append("still running")

    async with A.Node() as node:
        pid = node.spawn(quitter)
        proc = node.process(pid)
        await wait_until(lambda: not proc.alive)
        assert proc.exit_reason == A.NORMAL
        assert after == []


async def test_a_server_signalling_itself_dies_without_terminate() -> None:
    class SelfSignal(Script):
        async def handle_cast(self, request: Any, state: Any) -> Any:
            self.proc.node.exit(self.proc.pid, ("shot", "myself"))
            self.log.append("after the signal")
            return state

    async with A.Node() as node:
        server = SelfSignal()
        pid = await _start(node, server)
        proc = node.process(pid)
        node.cast(pid, "go")
        await wait_until(lambda: not proc.alive)
        assert proc.exit_reason == ("shot", "myself")
        assert server.log == ["init"]  # a signal kills: no terminate, as in OTP


async def test_exit_self_normal_is_a_message_to_a_trapping_caller() -> None:
    got: list[Any] = []

    async def trapper(proc: A.Process) -> None:
        proc.trap_exit = True
        proc.node.exit(proc.pid, A.NORMAL)
        got.append(await proc.receive())

    async with A.Node() as node:
        pid = node.spawn(trapper)
        await wait_until(lambda: got)
        assert got == [A.Exit(pid, A.NORMAL)]


async def test_call_threadsafe_and_send_exit_are_deprecated_aliases() -> None:
    async with A.Node() as node:
        pid = node.spawn(lambda proc: proc.receive())

        async def body(proc: A.Process) -> None:
            with pytest.warns(DeprecationWarning):
                proc.send_exit(pid, "bye")

        await _in_process(node, body)
        await wait_until(lambda: not node.is_alive(pid))
    threaded = A.Node.start_in_thread()
    try:
        assert threaded.apply_threadsafe(lambda: 41 + 1) == 42
        with pytest.warns(DeprecationWarning):
            assert threaded.call_threadsafe(lambda: "old") == "old"
    finally:
        threaded.stop_thread()
