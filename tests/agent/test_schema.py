"""The protocol's JSON Schema: generated from agent/messages.py, committed in
docs/, and matched by real frames of every kind, captured on a real socket
between a real agent and a real client (a recording proxy in between)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import actors
import agent
from agent import command_shapes as C
from agent import messages as M
from agent import protocol as P
from agent import schema
from agent.client import AgentClient, AgentError
from tests.agent.conftest import OP_TOKEN, Host

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "docs" / "protocol.schema.json"

Frame = tuple[str, dict[str, Any]]
"""(who sent it: ``agent`` or ``observer``, the frame)."""


def test_the_committed_schema_is_the_generated_one() -> None:
    assert SCHEMA_FILE.read_text() == schema.render(), "regenerate: python -m agent.schema > docs/protocol.schema.json"


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(json.loads(SCHEMA_FILE.read_text()))


# -- capturing real frames ----------------------------------------------------------------------------


class Tap:
    """A TCP proxy on loopback that records every frame in both directions;
    ``hold()`` stops reading from the agent (a stalled observer)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.frames: list[Frame] = []
        self.flowing = asyncio.Event()
        self.flowing.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _accept(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a held tap stalls the agent soon
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.upstream_port))
        ur, uw = await asyncio.open_connection(sock=sock, limit=P.MAX_OUTBOUND_FRAME + 64)
        for task in (self._pipe(cr, uw, "observer"), self._pipe(ur, cw, "agent")):
            t = asyncio.create_task(task)
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, who: str) -> None:
        dec = P.FrameDecoder(limit=P.MAX_OUTBOUND_FRAME)
        try:
            while True:
                if who == "agent":
                    await self.flowing.wait()
                data = await r.read(65536)
                if not data:
                    break
                for f in dec.feed(data):
                    self.frames.append((who, f))
                    if f["t"] == "batch":  # each of its events as well, as if it had come alone
                        self.frames += [(who, e) for e in f["evs"]]
                w.write(data)
                await w.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            w.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _idle(proc: actors.Process) -> None:
    while (msg := await proc.receive()) != "stop":
        if msg == "crash":
            raise ValueError("asked to crash") from KeyError("the cause")


async def _forwarder(proc: actors.Process, to: actors.Pid) -> None:
    while True:
        proc.send(to, await proc.receive())


async def _late_trapper(proc: actors.Process) -> None:
    await proc.receive()
    proc.trap_exit = True  # meta that changes after the spawn went out: an update
    await proc.receive()


async def _hog(proc: actors.Process) -> None:
    await proc.receive()
    time.sleep(0.35)  # noqa: ASYNC251 - blocks the host's loop on purpose: loop_blocked
    await proc.receive()


class _Server(actors.GenServer):
    async def init(self) -> Any:
        return {"password": "pw-secret", "n": 1}

    async def handle_cast(self, request: Any, state: Any) -> Any:
        raise ValueError(f"asked to {request}")


async def _until(client: AgentClient, pred: Any, what: str, timeout: float = 10.0) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        left = deadline - loop.time()
        if left <= 0:
            raise AssertionError(f"no {what} in time")
        msg = await client.next_message(left)
        if pred(msg):
            return msg


def _ev(kind: str) -> Any:
    return lambda m: m.get("t") == "ev" and m.get("ev") == kind


async def _capture() -> list[Frame]:
    h = Host(sample_hz=20, event_limit=100)
    node = h.node
    tap = Tap(h.agent.port)
    dial_frames: list[Frame] = []
    try:
        port = await tap.start()
        client = await AgentClient.connect("127.0.0.1", port, token=OP_TOKEN)
        await client.read_snapshot()
        assert (await client.command("ping"))["pong"] is True
        with pytest.raises(AgentError):
            await client.command("no_such_command")
        # links, monitors, names, suspension
        a, b = h.spawn(_idle), h.spawn(_idle)

        def wire() -> None:
            pa = node.process(a)
            pa.link(b)
            pa.unlink(b)
            pa.demonitor(pa.monitor(b))
            node.register("tapped", a)
            node.unregister("tapped")

        h.run(wire)
        await client.command("suspend", pid=str(a))
        await client.command("resume", pid=str(a))
        # every other command once (the replies' shapes are the commands' own: docs/protocol.md)
        await client.command("info", pid=str(a))
        await client.command("inspect", pid=str(a), mailbox_limit=5)
        await client.command("mailbox", pid=str(a), limit=5)
        await client.command("processes", limit=10, offset=0)
        await client.command("send", to=str(a), message=["hi", 1])
        with pytest.raises(AgentError):  # an asyncio node's command: not supported here
            await client.command("cancel", pid=str(a))
        await client.command("flight_recorder", pid=str(a), on=True, size=5, subtree=False)
        with pytest.raises(AgentError):  # no dump directory: an error reply
            await client.command("dump")
        await client.command("snapshot")
        # trace in and out
        fwd = h.spawn(_forwarder, b)
        await client.command("trace", pids=[str(fwd)], on=True)
        h.run(lambda: node.send(fwd, {"hello": "world"}))
        await _until(client, lambda m: m.get("ev") == "trace" and m.get("dir") == "out", "trace out")
        # a trace session with limits: its arrows come in trace frames, the last with its end
        await client.command("trace", id="schema", pids=[str(fwd)], max_msgs=2)
        h.run(lambda: node.send(fwd, {"again": 1}))
        await _until(client, lambda m: m.get("t") == "trace" and "end" in m, "a trace session's end")
        # an update, a normal exit, a crash with its report and a restart, a supervisor giving up
        late = h.spawn(_late_trapper)
        await _until(client, lambda m: m.get("ev") == "spawn" and m.get("pid") == str(late), "spawn")
        h.run(lambda: node.send(late, "go"))
        await _until(client, lambda m: m.get("ev") == "update" and m.get("pid") == str(late), "update")
        h.run(lambda: node.send(b, "stop"))
        sup = h.run_async(actors.start_supervisor(node, [_Server.child_spec(id="s")], intensity=5, period=5))
        child = h.run_async(actors.which_children(node, sup))[0].pid
        h.run(lambda: node.cast(child, "crash"))
        await _until(client, _ev("restart"), "restart")
        await client.command("terminate_child", supervisor=str(sup), child_id="s")
        restarted = await client.command("restart_child", supervisor=str(sup), child_id="s")
        await client.command("kill", pid=restarted["pid"], reason="kill")
        weak = h.run_async(actors.start_supervisor(node, [_Server.child_spec(id="w")], intensity=0, period=5))
        wchild = h.run_async(actors.which_children(node, weak))[0].pid
        h.run(lambda: node.cast(wchild, "crash"))
        await _until(client, _ev("gave_up"), "gave_up")
        # the host's loop blocked, then free again
        hog = h.spawn(_hog)
        node.loop.call_soon_threadsafe(node.send, hog, "go")
        await _until(client, _ev("loop_unblocked"), "loop_unblocked")
        await _until(client, lambda m: m.get("t") == "samples" and m.get("node"), "samples")
        # a stalled observer: events dropped, a gap, then a fresh snapshot
        tap.flowing.clear()

        def churn() -> None:
            for _ in range(200):
                node.exit(node.spawn(_idle), "kill")

        session = next(s for s in h.agent.sessions if s.ready)
        deadline = time.monotonic() + 20
        while session.dropped == 0 and session.resync is False:
            assert time.monotonic() < deadline, "the agent never dropped an event for a stalled observer"
            h.run(churn)
            await asyncio.sleep(0.01)
        tap.flowing.set()
        await _until(client, lambda m: m.get("t") == "gap", "gap", timeout=20)
        await _until(client, lambda m: m.get("t") == "snapshot_end", "snapshot after the gap", timeout=20)
        await client.close()
        # a refused handshake ends with an error frame
        with pytest.raises(AgentError):
            await AgentClient.connect("127.0.0.1", port, token="a-wrong-token-0123456789")
        # an agent that dials out says who it is first
        got = asyncio.Event()

        async def observer(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            dec = P.FrameDecoder(limit=P.MAX_OUTBOUND_FRAME)
            while len(dial_frames) < 2 and (data := await r.read(65536)):
                dial_frames.extend(("agent", f) for f in dec.feed(data))
            got.set()
            w.close()

        listener = await asyncio.start_server(observer, "127.0.0.1", 0)
        dialer = agent.dial(h.agent, f"127.0.0.1:{listener.sockets[0].getsockname()[1]}", name="tapped-node")
        try:
            await asyncio.wait_for(got.wait(), 10)
        finally:
            dialer.stop()
            listener.close()
        return tap.frames + dial_frames
    finally:
        await tap.close()
        h.stop()


@pytest.fixture(scope="module")
def frames() -> Iterator[list[Frame]]:
    yield asyncio.run(_capture())


def _kind(frame: dict[str, Any]) -> str:
    if frame["t"] == "ev":
        return f"ev:{frame['ev']}"
    if frame["t"] == "reply":
        return f"reply:{'ok' if frame['ok'] else 'error'}"
    if frame["t"] == "cmd":
        return f"cmd:{frame['cmd']}"
    return str(frame["t"])


def test_frames_of_every_kind_were_captured(frames: list[Frame]) -> None:
    # "batch" comes only when several events are queued at once (tests/agent/test_batch.py makes sure)
    want = {t for t in M.AGENT_FRAMES if t not in ("ev", "reply", "batch")} | {"auth"}
    want |= {f"ev:{k}" for k in M.EVENTS} | {"reply:ok", "reply:error"}
    want |= {f"cmd:{c}" for c in P.ALL_COMMANDS}
    assert want - {_kind(f) for _, f in frames} == set()
    exits = [f for _, f in frames if f["t"] == "ev" and f["ev"] == "exit"]
    assert any(f["report"] for f in exits) and any(f["report"] is None for f in exits)
    traces = {f["dir"] for _, f in frames if f["t"] == "ev" and f["ev"] == "trace"}
    assert traces == {"in", "out"}


def _shape(who: str, frame: dict[str, Any]) -> str:
    """The name of the one definition a frame must match."""
    t = frame["t"]
    if t == "ev":
        return M.EVENTS[frame["ev"]].__name__
    if t == "reply":
        return (M.ReplyOk if frame["ok"] else M.ReplyError).__name__
    return (M.AGENT_FRAMES if who == "agent" else M.OBSERVER_FRAMES)[t][0].__name__


def test_every_command_has_an_args_and_a_result_shape() -> None:
    assert set(C.COMMAND_ARGS) == set(P.ALL_COMMANDS) == set(C.COMMAND_RESULTS)


def test_every_real_frame_matches_the_schema(frames: list[Frame]) -> None:
    doc = json.loads(SCHEMA_FILE.read_text())
    whole = jsonschema.Draft202012Validator(doc)
    defs = {k: v for k, v in doc.items() if k != "anyOf"}
    validators: dict[str, jsonschema.Draft202012Validator] = {}
    bad = []
    unknown = [f for _, f in frames if f["t"] == "cmd" and f["cmd"] not in C.COMMAND_ARGS]
    assert unknown and not any(whole.is_valid(f) for f in unknown), "an unknown command is not in the schema"
    for who, frame in frames:
        if frame in unknown:
            continue
        # the frame's own shape first (readable errors), then the whole schema, as a user would
        name = _shape(who, frame)
        if name not in validators:
            validators[name] = jsonschema.Draft202012Validator({**defs, "$ref": f"#/$defs/{name}"})
        errors = list(validators[name].iter_errors(frame))
        if frame["t"] == "cmd":  # the args against their own shape too: readable errors
            args = C.COMMAND_ARGS[frame["cmd"]].__name__
            if args not in validators:
                validators[args] = jsonschema.Draft202012Validator({**defs, "$ref": f"#/$defs/{args}"})
            errors += validators[args].iter_errors(frame["args"])
        bad += [f"{_kind(frame)} ({name}): {e.message} at {list(e.absolute_path)}" for e in errors]
        if not errors and not whole.is_valid(frame):
            bad.append(f"{_kind(frame)}: matches {name} but not the whole schema")
    assert bad == []
    assert len(frames) > 50


def test_every_reply_carries_its_commands_result(frames: list[Frame]) -> None:
    doc = json.loads(SCHEMA_FILE.read_text())
    defs = {k: v for k, v in doc.items() if k != "anyOf"}
    sent = {f["id"]: f["cmd"] for who, f in frames if who == "observer" and f["t"] == "cmd"}
    checked, bad = set(), []
    for who, f in frames:
        if who != "agent" or f["t"] != "reply" or not f["ok"]:
            continue
        cmd = sent[f["id"]]
        shape = C.COMMAND_RESULTS[cmd].__name__
        v = jsonschema.Draft202012Validator({**defs, "$ref": f"#/$defs/{shape}"})
        bad += [f"{cmd} ({shape}): {e.message} at {list(e.absolute_path)}" for e in v.iter_errors(f["result"])]
        checked.add(cmd)
    assert bad == []
    # no dump directory here, and cancel is an asyncio node's (tests/agent/test_asyncio_schema.py): errors
    assert set(P.ALL_COMMANDS) - checked == {"dump", "cancel"}


def test_every_real_frame_reads_at_the_boundary(frames: list[Frame]) -> None:
    readers = {
        "hello": P.read_hello,
        "welcome": P.read_welcome,
        "reply": P.read_reply,
        "dial": P.read_dial,
        "error": P.read_error,
    }
    for who, frame in frames:
        if who != "agent":
            continue
        if frame["t"] == "batch":  # its events are in ``frames`` as well, read below
            assert P.read_batch(frame) is frame["evs"]
            continue
        read = readers.get(frame["t"], P.read_push)
        assert read(frame) is frame or frame["t"] == "error"


def test_a_malformed_or_unknown_push_is_refused_at_the_boundary() -> None:
    with pytest.raises(P.FrameError, match="unknown event kind"):
        P.read_push({"t": "ev", "seq": 1, "ev": "teleport", "time": 1.0})
    with pytest.raises(P.FrameError, match=r"exit event frame without .*pid"):
        P.read_push({"t": "ev", "seq": 1, "ev": "exit", "time": 1.0})
    with pytest.raises(P.FrameError, match="unexpected frame type"):
        P.read_push({"t": "hello"})
    with pytest.raises(P.FrameError, match="without dropped"):
        P.read_push({"t": "gap"})
    with pytest.raises(P.FrameError):
        P.read_reply({"t": "reply", "id": 1, "ok": False, "error": "no"})


def test_the_schema_refuses_a_frame_off_its_shape(frames: list[Frame]) -> None:
    doc = json.loads(SCHEMA_FILE.read_text())
    v = jsonschema.Draft202012Validator(doc)
    spawn = next(f for _, f in frames if f["t"] == "ev" and f["ev"] == "spawn")
    assert v.is_valid(spawn)
    assert not v.is_valid({**spawn, "pid": 42})
    assert not v.is_valid({**spawn, "surprise": 1})  # a field the declaration does not know
    assert not v.is_valid({k: x for k, x in spawn.items() if k != "seq"})
    samples = next(f for _, f in frames if f["t"] == "samples" and f["rows"])
    assert not v.is_valid({**samples, "rows": [samples["rows"][0][:-1]]})
