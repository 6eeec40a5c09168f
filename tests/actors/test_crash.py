"""Crash reports: the last message in, the state before, the traceback with its
cause chain, the ancestry and budget; the flight recorder."""

from __future__ import annotations

import copy
import traceback
from typing import Any

import actors as A
from tests.conftest import wait_until


class Exits(A.Instrument):
    def __init__(self) -> None:
        self.exits: list[A.Exited] = []

    def exited(self, event: A.Exited) -> None:
        self.exits.append(event)

    def report_of(self, pid: A.Pid) -> A.CrashReport | None:
        for e in self.exits:
            if e.pid == pid:
                return e.report
        return None


class Ledger(A.GenServer):
    """Keeps a balance; ``("withdraw", n)`` past the balance crashes with a cause."""

    async def init(self, balance: int = 10) -> Any:
        return {"balance": balance, "ops": 0}

    async def handle_call(self, request: Any, from_: A.From, state: Any) -> A.Reply:
        op, n = request
        return A.Reply(n, _apply(op, n, state))

    async def handle_cast(self, request: Any, state: Any) -> Any:
        op, n = request
        return _apply(op, n, state)


def _apply(op: str, n: int, state: dict[str, Any]) -> dict[str, Any]:
    if op == "withdraw" and n > state["balance"]:
        try:
            raise KeyError("overdraft")
        except KeyError as exc:
            raise ValueError(f"cannot withdraw {n}") from exc
    sign = -1 if op == "withdraw" else 1
    return {"balance": state["balance"] + sign * n, "ops": state["ops"] + 1}


class Mutating(A.GenServer):
    """Mutates its state in place, then crashes."""

    async def handle_cast(self, request: Any, state: Any) -> Any:
        state["seen"].append(request)
        raise RuntimeError("boom")


class CopyingMutating(Mutating):
    crash_state_copy = staticmethod(copy.deepcopy)


async def test_gen_server_crash_report_has_message_state_traceback_chain_and_ancestry() -> None:
    rec = Exits()
    async with A.Node(log_crashes=False) as node:
        node.add_instrument(rec)
        inner = A.supervisor_spec("inner", [Ledger.child_spec(10, id="ledger")])
        top = await A.start_supervisor(node, [inner], name="top", intensity=5)
        assert top is not None
        inner_pid = next(c.pid for c in await A.which_children(node, top) if c.id == "inner")
        assert inner_pid is not None
        ledger = next(c.pid for c in await A.which_children(node, inner_pid) if c.id == "ledger")
        assert ledger is not None
        assert await node.call(ledger, ("deposit", 5)) == 5
        state_before = await A.get_state(node, ledger)
        node.cast(ledger, ("withdraw", 99))
        await wait_until(lambda: rec.report_of(ledger) is not None, what="the crash report")
        r = rec.report_of(ledger)
        assert r is not None
        # exactly that message, the state before it
        assert r.has_message and r.message == ("withdraw", 99) and r.message_kind == "cast"
        assert r.has_state and r.state == state_before == {"balance": 15, "ops": 1}
        assert r.kind == "gen_server" and r.own is True
        # the traceback: the handler's frame, own frames first, and the cause chain
        # (the harness runs each test inside an ``except RuntimeError``: Python
        # chains that as the KeyError's context, so only the first two are ours)
        assert [e.type for e in r.exceptions][:2] == ["ValueError", "KeyError"]
        assert r.exceptions[0].message == "cannot withdraw 99"
        assert r.exceptions[1].relation == "cause"
        frames = r.exceptions[0].frames
        own = [f for f in frames if f.own]
        assert [f.function for f in own] == ["Ledger.handle_cast", "_apply"]
        assert frames[: len(own)] == tuple(own), "the process's own frames come first"
        assert any(not f.own and f.file.endswith("_gen_server.py") for f in frames)
        assert own[-1].source is not None and "raise ValueError" in own[-1].source
        assert r.innermost_own_frame == own[-1]
        assert r.traceback is not None and "The above exception was the direct cause" in r.traceback
        # ancestry: root first, then the inner supervisor, then the process
        assert [a.pid for a in r.ancestry] == [top, inner_pid, ledger]
        assert [a.name for a in r.ancestry] == ["top", "Supervisor", "Ledger"]
        assert r.supervisor == inner_pid and r.child_id == "ledger" and r.restarts == 0
        assert r.budget is not None and r.budget.used == 0 and r.budget.intensity == 1
        assert r.flight is None  # off by default
        # the restarted child's next crash says it was restarted once
        new = await wait_until(
            lambda: next((p for p in node.processes() if p != ledger and node.info(p).label == "Ledger"), None)
        )
        await node.call(new, ("deposit", 1))
        node.cast(new, ("withdraw", 1000))
        await wait_until(lambda: rec.report_of(new) is not None)
        r2 = rec.report_of(new)
        assert r2 is not None and r2.restarts == 1 and r2.budget is not None and r2.budget.used == 1
        assert r2.state == {"balance": 11, "ops": 1}


async def test_normal_exits_carry_no_report_and_the_switch_turns_reports_off() -> None:
    rec = Exits()
    async with A.Node(log_crashes=False) as node:
        node.add_instrument(rec)
        pid = await A.start_server(node, Ledger, 1)
        assert pid is not None
        await A.stop_server(node, pid)
        await wait_until(lambda: rec.exits)
        assert rec.exits[-1].report is None
    rec2 = Exits()
    async with A.Node(log_crashes=False, crash_reports=False) as node:
        node.add_instrument(rec2)
        pid = await A.start_server(node, Ledger, 1)
        assert pid is not None
        node.cast(pid, ("withdraw", 5))
        await wait_until(lambda: rec2.exits)
        assert isinstance(rec2.exits[-1].reason, ValueError) and rec2.exits[-1].report is None


async def test_killed_by_a_signal_is_not_its_own_crash() -> None:
    rec = Exits()
    async with A.Node(log_crashes=False) as node:
        node.add_instrument(rec)
        pid = await A.start_server(node, Ledger, 3)
        assert pid is not None
        await node.call(pid, ("deposit", 1))
        node.exit(pid, "kill")
        await wait_until(lambda: rec.report_of(pid) is not None)
        r = rec.report_of(pid)
        assert r is not None and r.own is False and r.reason == "killed" and r.exceptions == ()
        assert r.message == ("deposit", 1) and r.message_kind == "call"


async def test_state_before_is_a_reference_unless_the_server_opts_in_to_a_copy() -> None:
    rec = Exits()
    async with A.Node(log_crashes=False) as node:
        node.add_instrument(rec)
        ref_pid = await A.start_server(node, Mutating, {"seen": []})
        copy_pid = await A.start_server(node, CopyingMutating, {"seen": []})
        assert ref_pid is not None and copy_pid is not None
        node.cast(ref_pid, "x")
        node.cast(copy_pid, "x")
        await wait_until(lambda: rec.report_of(ref_pid) and rec.report_of(copy_pid))
        by_ref, copied = rec.report_of(ref_pid), rec.report_of(copy_pid)
        assert by_ref is not None and copied is not None
        assert by_ref.state == {"seen": ["x"]}  # mutated in place: the reference shows it
        assert copied.state == {"seen": []}  # the copy is exactly the state before


async def test_flight_recorder_keeps_the_last_n_with_durations_and_toggles_per_subtree() -> None:
    rec = Exits()
    async with A.Node(log_crashes=False) as node:
        node.add_instrument(rec)
        top = await A.start_supervisor(
            node, [Ledger.child_spec(1000, id="a"), Ledger.child_spec(1000, id="b")], intensity=10
        )
        assert top is not None
        kids = {c.id: c.pid for c in await A.which_children(node, top)}
        changed = node.flight_recorder(top, True, size=3, subtree=True)
        assert set(changed) == {top, kids["a"], kids["b"]}
        for i in range(5):
            await node.call(kids["a"], ("deposit", i))
        node.cast(kids["a"], ("withdraw", 10**6))
        await wait_until(lambda: rec.report_of(kids["a"]) is not None)
        r = rec.report_of(kids["a"])
        assert r is not None and r.flight is not None
        # the last 3 handled, oldest first, then the one being handled when it died
        assert [f.message for f in r.flight] == [("deposit", 2), ("deposit", 3), ("deposit", 4), ("withdraw", 10**6)]
        assert [f.kind for f in r.flight] == ["call", "call", "call", "cast"]
        assert all(f.duration is not None and f.duration >= 0 for f in r.flight[:3])
        assert r.flight[-1].duration is None
        assert r.flight[0].time <= r.flight[1].time <= r.flight[2].time
        # the restarted child inherits the subtree's recorder
        new_a = await wait_until(
            lambda: next((c for c in node.processes() if c not in kids.values() and c != top), None)
        )
        assert node.process(new_a)._flight is not None
        # off for the subtree: b crashes without a recorder
        node.flight_recorder(top, False, subtree=True)
        assert node.process(kids["b"])._flight is None
        node.cast(kids["b"], ("withdraw", 10**6))
        await wait_until(lambda: rec.report_of(kids["b"]) is not None)
        rb = rec.report_of(kids["b"])
        assert rb is not None and rb.flight is None


async def test_plain_process_report_has_its_last_message_and_parent_ancestry() -> None:
    rec = Exits()

    async def worker(proc: A.Process) -> None:
        while True:
            msg = await proc.receive()
            if msg == "die":
                raise LookupError("asked to die")

    async def boss(proc: A.Process) -> None:
        child = proc.spawn(worker, name="w")
        proc.send(child, "hello")
        proc.send(child, "die")
        await proc.receive()

    async with A.Node(log_crashes=False) as node:
        node.add_instrument(rec)
        b = node.spawn(boss, name="boss")
        w = await wait_until(lambda: node.whereis("w") or next((e.pid for e in rec.exits), None))
        await wait_until(lambda: rec.report_of(w) is not None)
        r = rec.report_of(w)
        assert r is not None
        assert r.message == "die" and r.message_kind == "info" and not r.has_state and r.kind == "worker"
        assert [a.pid for a in r.ancestry] == [b, w] and r.ancestry[0].name == "boss"
        assert r.exceptions[0].type == "LookupError" and r.budget is None
        node.exit(b, "kill")


def _strip_position_markers(text: str) -> str:
    """Python's traceback without its ``^^^`` / ``~~~`` lines (ours has none)."""
    lines = text.splitlines(keepends=True)
    return "".join(line for line in lines if not (line.strip() and not line.strip(" ^~\n")))


def _raise_chain() -> None:
    try:
        _apply("withdraw", 99, {"balance": 1, "ops": 0})
    except ValueError:
        {}["missing"]  # a KeyError while handling the ValueError


def test_report_traceback_reads_like_pythons_for_a_cause_and_context_chain() -> None:
    try:
        _raise_chain()
    except KeyError as exc:
        caught = exc
    ours = A._crash.format_chain(A._crash.capture_chain(caught))
    assert "The above exception was the direct cause" in ours
    assert "During handling of the above exception" in ours
    assert ours == _strip_position_markers("".join(traceback.format_exception(caught)))


async def test_report_keeps_the_traceback_of_the_crash_even_if_the_exception_is_raised_again() -> None:
    """The report is read later (by the agent's thread): what it shows is the
    traceback the exception had when the process died, not one it gets when
    somebody re-raises the same object afterwards."""
    exits = Exits()
    boom = RuntimeError("shared")

    async def dies(proc: A.Process) -> None:
        raise boom

    def reraise_elsewhere() -> None:
        raise boom

    async with A.Node(log_crashes=False) as node:
        node.add_instrument(exits)
        pid = node.spawn(dies)
        await wait_until(lambda: exits.report_of(pid) is not None)
        r = exits.report_of(pid)
        assert r is not None
        try:
            reraise_elsewhere()
        except RuntimeError:
            pass
        assert r.traceback is not None and "in dies" in r.traceback
        assert "reraise_elsewhere" not in r.traceback
        assert [f.function for f in r.exceptions[0].frames if f.own] == [
            "test_report_keeps_the_traceback_of_the_crash_even_if_the_exception_is_raised_again.<locals>.dies"
        ]
