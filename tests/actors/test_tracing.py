"""Message tracing in the runtime: what a traced process emits, and that an untraced one emits nothing."""

from __future__ import annotations

from typing import Any

import pytest

import actors as A
from tests.conftest import wait_until


class Recorder(A.Instrument):
    def __init__(self) -> None:
        self.events: list[Any] = []

    def message_sent(self, event: A.MessageSent) -> None:
        self.events.append(event)

    def message_received(self, event: A.MessageReceived) -> None:
        self.events.append(event)

    def call_sent(self, event: A.CallSent) -> None:
        self.events.append(event)

    def call_returned(self, event: A.CallReturned) -> None:
        self.events.append(event)

    def call_replied(self, event: A.CallReplied) -> None:
        self.events.append(event)


class Echo(A.GenServer):
    async def init(self, *args: Any) -> Any:
        return None

    async def handle_call(self, request: Any, from_: A.From, state: Any) -> Any:
        if request == "boom":
            raise ValueError("boom")
        return A.Reply(("echo", request), state)

    async def handle_cast(self, request: Any, state: Any) -> Any:
        return A.NoReply(state)


async def _client(proc: A.Process, server: A.Pid, done: list[Any]) -> None:
    await proc.receive()
    done.append(await proc.call(server, {"n": 1}))
    proc.cast(server, "note")
    await proc.receive()


async def test_a_traced_call_is_seen_at_both_ends_and_paired_by_its_objects() -> None:
    rec = Recorder()
    async with A.Node(log_crashes=False) as node:
        server = await A.start_server(node, Echo)
        assert server is not None
        done: list[Any] = []
        client = node.spawn(_client, server, done)
        node.add_instrument(rec)
        node.trace(client)
        node.trace(server)
        node.send(client, "go")
        await wait_until(
            lambda: (
                done
                and any(
                    type(e) is A.MessageReceived and e.pid == server and type(e.message) is A.CastMsg
                    for e in rec.events
                )
            ),
            what="the cast received",
        )
        kinds = [type(e).__name__ for e in rec.events]
        assert kinds[:5] == ["MessageReceived", "CallSent", "MessageReceived", "CallReplied", "CallReturned"]
        go, sent, got, replied, returned = rec.events[:5]
        assert go.pid == client and go.message == "go"
        assert sent.pid == client and sent.to == server
        assert type(got.message) is A.CallMsg and got.message.request is sent.request  # the very object
        assert (
            replied.pid == server and replied.reply_to is got.message.reply_to and replied.value == ("echo", {"n": 1})
        )
        assert returned.pid == client and returned.ok and returned.value == ("echo", {"n": 1})
        cast_out = [e for e in rec.events if type(e) is A.MessageSent and e.sender == client]
        assert len(cast_out) == 1 and type(cast_out[0].message) is A.CastMsg and cast_out[0].message.request == "note"


async def test_untraced_processes_emit_nothing_and_a_failed_call_returns_not_ok() -> None:
    rec = Recorder()
    async with A.Node(log_crashes=False) as node:
        node.add_instrument(rec)
        server = await A.start_server(node, Echo)
        assert server is not None
        done: list[Any] = []
        client = node.spawn(_client, server, done)
        node.send(client, "go")
        await wait_until(lambda: bool(done), what="the untraced call")
        assert rec.events == []
        failed: list[Any] = []

        async def failing(proc: A.Process) -> None:
            try:
                await proc.call(server, "boom")
            except A.ActorError as exc:
                failed.append(exc)

        pid = node.spawn(failing)
        node.trace(pid)
        await wait_until(lambda: bool(failed), what="the failed call")
        returned = [e for e in rec.events if type(e) is A.CallReturned]
        assert len(returned) == 1 and returned[0].ok is False and isinstance(returned[0].value, A.ActorError)


@pytest.mark.parametrize("hook", ["call_sent", "call_returned", "call_replied"])
def test_the_no_op_instrument_has_every_call_hook(hook: str) -> None:
    assert callable(getattr(A.Instrument(), hook))


class Later(A.GenServer):
    """Replies to a call only when told to (a deferred reply)."""

    async def init(self, *args: Any) -> Any:
        return None

    async def handle_call(self, request: Any, from_: A.From, state: Any) -> Any:
        return A.NoReply(from_)

    async def handle_info(self, msg: Any, state: Any) -> Any:
        if state is not None:
            state.reply(("late", msg))
        return A.NoReply(None)


async def test_a_deferred_reply_is_traced_at_the_server_and_paired_by_its_from() -> None:
    rec = Recorder()
    async with A.Node(log_crashes=False) as node:
        server = await A.start_server(node, Later)
        assert server is not None
        node.add_instrument(rec)
        node.trace(server)
        task = node.loop.create_task(node.call(server, "q"))
        await wait_until(lambda: any(type(e) is A.MessageReceived for e in rec.events), what="the call received")
        node.send(server, "now")
        assert await task == ("late", "now")
        got = next(e for e in rec.events if type(e) is A.MessageReceived and type(e.message) is A.CallMsg)
        replied = [e for e in rec.events if type(e) is A.CallReplied]
        assert len(replied) == 1 and replied[0].reply_to is got.message.reply_to and replied[0].value == ("late", "now")
