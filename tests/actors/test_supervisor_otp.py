"""Supervisors against OTP's own suite: each test is named after (and follows)
the supervisor_SUITE case it mirrors, for the behaviours issue 16 settles:
ignore at start, defaults, simple_one_for_one's child administration, children
caught restarting, start arguments of temporary children, significant children
with auto_shutdown, get_childspec and which_child.

Where the suite waits a fixed time to see that nothing happens ("no exit
within 1000 ms"), these tests make one more call to the supervisor instead: it
handles its mailbox in order, so once a call made after a child's exit has
been answered, the supervisor has acted on that exit.
"""

from __future__ import annotations

import dataclasses
import gc
import weakref
from typing import Any

import pytest

import actors as A
from tests.conftest import wait_until

Counts = tuple[int, int, int, int]


async def counts(node: A.Node, sup: A.Pid | str) -> Counts:
    """OTP's get_child_counts: [specs, active, supervisors, workers]."""
    c = await A.count_children(node, sup)
    return (c["specs"], c["active"], c["supervisors"], c["workers"])


async def rows(node: A.Node, sup: A.Pid | str) -> list[tuple[Any, Any]]:
    """which_children as OTP prints it: (id, pid | "restarting" | None)."""
    return [(r.id, "restarting" if r.restarting else r.pid) for r in await A.which_children(node, sup)]


class Child(A.GenServer):
    """OTP's supervisor_1: ``init("ignore")`` ignores; ``"stop"`` ends it
    ``normal``, ``"die"`` with ``died``."""

    async def init(self, *args: Any) -> Any:
        return A.Ignore() if args and args[0] == "ignore" else None

    async def handle_info(self, msg: Any, state: Any) -> Any:
        if msg == "stop":
            return A.Stop(A.NORMAL, state)
        if msg == "die":
            return A.Stop("died", state)
        return state


def child(id: Any, *args: Any, restart: str = A.PERMANENT, significant: bool = False) -> A.ChildSpec:
    return dataclasses.replace(Child.child_spec(*args, id=id, restart=restart), significant=significant)


async def end(node: A.Node, pid: A.Pid | None, how: str) -> None:
    """OTP's terminate/2 for a child: ``kill``, ``normal`` or ``abnormal``; waits until it is gone."""
    assert pid is not None
    if how == "kill":
        node.exit(pid, A.KILL)
    else:
        node.send(pid, "stop" if how == "normal" else "die")
    await wait_until(lambda: not node.is_alive(pid), what=f"{pid} to end")


async def pid_of(node: A.Node, sup: A.Pid, cid: Any) -> A.Pid:
    pid = (await A.which_child(node, sup, cid)).pid
    assert pid is not None
    return pid


async def still_up(node: A.Node, sup: A.Pid) -> bool:
    """True if the supervisor is alive once it has handled everything sent to it so far."""
    try:
        await A.count_children(node, sup)
    except A.ServerDied:
        return False
    return node.is_alive(sup)


async def exits_shutdown(node: A.Node, proc: A.Process) -> bool:
    await wait_until(lambda: not proc.alive, what=f"{proc.pid} to exit")
    return bool(proc.exit_reason == A.SHUTDOWN)


# -- sup_start: ignore -------------------------------------------------------------------------------


class IgnoringSup(A.Supervisor):
    def children(self, *args: Any) -> Any:
        return A.Ignore()


class ExitLog(A.Instrument):
    def __init__(self) -> None:
        self.exits: list[A.Exited] = []

    def exited(self, event: A.Exited) -> None:
        self.exits.append(event)


async def test_sup_start_ignore_init() -> None:
    """``ignore = start_link(ignore), check_no_exit(100)``: the caller gets
    ignore (None), the supervisor exits ``normal``, and a linked caller that
    traps exits finds no EXIT from it (OTP 26's proc_lib consumes it; before
    OTP 26 the caller got ``EXIT(Sup, normal)``; see docs/otp.md)."""
    async with A.Node() as node:
        log = ExitLog()
        node.add_instrument(log)
        out: dict[str, Any] = {}

        async def caller(proc: A.Process) -> None:
            proc.trap_exit = True
            out["result"] = await A.start_link(proc, IgnoringSup(), label="ignoring")
            await proc.receive(lambda m: m == "stop")  # leaves any Exit in the mailbox

        pid = node.spawn(caller)
        exited = await wait_until(lambda: [e for e in log.exits if e.label == "ignoring"], what="the supervisor's exit")
        await wait_until(lambda: "result" in out, what="start_link to return")
        assert out == {"result": None}
        assert [e.reason for e in exited] == [A.NORMAL]
        assert node.process(pid).mailbox_peek() == []  # no EXIT(Sup, normal) was delivered
        node.send(pid, "stop")
        await wait_until(lambda: not node.is_alive(pid))


async def test_sup_start_ignore_child() -> None:
    """A permanent child that returns ignore keeps its spec, without a pid."""
    async with A.Node() as node:
        sup = await A.start_supervisor(node, [], intensity=2)
        assert await A.start_child(node, sup, child("child1", "ignore")) is None
        cpid2 = await A.start_child(node, sup, child("child2"))
        assert await rows(node, sup) == [("child1", None), ("child2", cpid2)]
        assert await counts(node, sup) == (2, 1, 0, 2)


async def test_sup_start_ignore_temporary_child() -> None:
    """A temporary child of the init specs whose start returns ignore is not kept."""
    async with A.Node() as node:
        children = [child("child1", "ignore", restart=A.TEMPORARY), child("child2", restart=A.TEMPORARY)]
        sup = await A.start_supervisor(node, children, intensity=2)
        [(cid, cpid2)] = await rows(node, sup)
        assert cid == "child2" and isinstance(cpid2, A.Pid)
        assert await counts(node, sup) == (1, 1, 0, 1)


async def test_sup_start_ignore_temporary_child_start_child() -> None:
    async with A.Node() as node:
        sup = await A.start_supervisor(node, [], intensity=2)
        assert await A.start_child(node, sup, child("child1", "ignore", restart=A.TEMPORARY)) is None
        cpid2 = await A.start_child(node, sup, child("child2", restart=A.TEMPORARY))
        assert await rows(node, sup) == [("child2", cpid2)]
        assert await counts(node, sup) == (1, 1, 0, 1)
        # not kept, so the same id can be started again
        assert await A.start_child(node, sup, child("child1", restart=A.TEMPORARY)) is not None


@pytest.mark.parametrize("restart", [A.TEMPORARY, A.PERMANENT])
async def test_sup_start_ignore_child_start_child_simple(restart: str) -> None:
    """sup_start_ignore_{temporary,permanent}_child_start_child_simple: an
    ignored dynamic child is not added, and the supervisor still stops cleanly."""
    async with A.Node() as node:
        sup = await A.start_supervisor(
            node, [child("child1", restart=restart)], strategy="simple_one_for_one", intensity=2
        )
        assert await A.start_child(node, sup, ["ignore"]) is None
        cpid2 = await A.start_child(node, sup, [])
        assert await rows(node, sup) == [(None, cpid2)]
        assert await counts(node, sup) == (1, 1, 0, 1)
        proc = node.process(sup)
        node.exit(sup, A.SHUTDOWN)
        assert await exits_shutdown(node, proc)


async def test_simple_one_for_one_restart_ignore() -> None:
    """A dynamic child whose restart returns ignore leaves the table."""
    plan = {"starts": 0, "ignore_from": 3}

    async def start_fn(parent: A.Process, *extra: Any) -> A.Pid | None:
        plan["starts"] += 1
        if plan["starts"] >= plan["ignore_from"]:
            return None
        return await A.start_link(parent, Child)

    for restart in (A.TRANSIENT, A.PERMANENT):
        plan["starts"] = 0
        async with A.Node() as node:
            template = A.ChildSpec("child", start_fn, restart)
            sup = await A.start_supervisor(node, [template], strategy="simple_one_for_one", intensity=10)
            first = await A.start_child(node, sup, [])
            await end(node, first, "kill")
            [(_, second)] = await rows(node, sup)
            assert isinstance(second, A.Pid) and second != first
            await end(node, second, "kill")
            assert await rows(node, sup) == []  # its restart returned ignore
            assert plan["starts"] == 3 and node.is_alive(sup)


# -- defaults: a supervisor child's shutdown is infinity ---------------------------------------------


async def test_sup_start_map_defaults_shutdown_by_child_type() -> None:
    """sup_start_map: shutdown defaults to 5000 ms for a worker and infinity
    for a supervisor; get_childspec answers the full spec."""

    async def start_fn(parent: A.Process, *extra: Any) -> A.Pid | None:
        return await A.start_link(parent, Child)

    assert A.ChildSpec("w", start_fn).shutdown == 5.0
    assert A.ChildSpec("s", start_fn, type="supervisor").shutdown == A.INFINITY
    assert A.ChildSpec("s", start_fn, type="supervisor", shutdown=1.0).shutdown == 1.0
    assert A.Supervisor.child_spec(id="sup").shutdown == A.INFINITY
    assert A.Supervisor.child_spec(id="sup").type == "supervisor"
    assert A.supervisor_spec("sup", []).shutdown == A.INFINITY
    assert Child.child_spec(id="w").shutdown == 5.0
    async with A.Node() as node:
        children = [
            A.ChildSpec("child1", start_fn),
            A.ChildSpec("child2", start_fn, shutdown=A.BRUTAL_KILL),
            A.Supervisor.child_spec(id="child3"),
        ]
        sup = await A.start_supervisor(node, children)
        got = {cid: await A.get_childspec(node, sup, cid) for cid in ("child1", "child2", "child3")}
        assert [(s.restart, s.shutdown, s.type, s.significant) for s in got.values()] == [
            (A.PERMANENT, 5.0, "worker", False),
            (A.PERMANENT, A.BRUTAL_KILL, "worker", False),
            (A.PERMANENT, A.INFINITY, "supervisor", False),
        ]
        assert got["child1"] is children[0]
        with pytest.raises(A.SupervisorError) as ei:
            await A.get_childspec(node, sup, "child4")
        assert ei.value.reason == "not_found"


async def test_sup_start_map_simple() -> None:
    """get_childspec of a simple_one_for_one child (by pid) is the template."""
    async with A.Node() as node:
        template = child("undefined", restart=A.TEMPORARY)
        sup = await A.start_supervisor(node, [template], strategy="simple_one_for_one")
        pids = [await A.start_child(node, sup, []) for _ in range(3)]
        for pid in pids:
            assert await A.get_childspec(node, sup, pid) is template
        outsider = node.spawn(_idle)
        with pytest.raises(A.SupervisorError) as ei:
            await A.get_childspec(node, sup, outsider)
        assert ei.value.reason == "not_found"
        node.exit(outsider, A.KILL)


async def _idle(proc: A.Process) -> None:
    await proc.receive()


# -- child_specs: faulty specs get OTP's reasons ------------------------------------------------------


async def test_child_specs() -> None:
    async with A.Node() as node:
        sup = await A.start_supervisor(node, [])
        with pytest.raises(A.SupervisorError) as ei:
            await A.start_child(node, sup, "hej")
        assert ei.value.reason == ("invalid_child_spec", "hej")
        c = child("child")
        faulty: list[tuple[list[Any], Any]] = [
            ([c, c], ("start_spec", ("duplicate_child_name", "child"))),
            (["child4"], ("start_spec", ("invalid_child_spec", "child4"))),
        ]
        for bad, reason in faulty:
            with pytest.raises(A.StartError) as e2:
                await A.start_supervisor(node, bad)
            assert e2.value.reason == reason
        # simple_one_for_one needs exactly one child spec
        for bad in ([], [c, c]):
            with pytest.raises(A.StartError) as e2:
                await A.start_supervisor(node, bad, strategy="simple_one_for_one")
            assert e2.value.reason == ("bad_start_spec", bad)


# -- simple_one_for_one child administration ----------------------------------------------------------


async def test_child_adm_simple() -> None:
    async with A.Node() as node:
        sup = await A.start_supervisor(node, [child("child")], strategy="simple_one_for_one", intensity=2)
        assert await A.which_children(node, sup) == []
        assert await counts(node, sup) == (1, 0, 0, 0)
        cpid1 = await A.start_child(node, sup, [])
        assert await rows(node, sup) == [(None, cpid1)]
        assert await counts(node, sup) == (1, 1, 0, 1)
        cpid2 = await A.start_child(node, sup, [])
        assert set(await rows(node, sup)) == {(None, cpid1), (None, cpid2)}
        assert await counts(node, sup) == (1, 2, 0, 2)
        # termination: by id is the misuse OTP names; by pid works, and again once gone
        with pytest.raises(A.SupervisorError) as ei:
            await A.terminate_child(node, sup, "child1")
        assert ei.value.reason == "simple_one_for_one"
        assert await counts(node, sup) == (1, 2, 0, 2)
        await A.terminate_child(node, sup, cpid1)
        assert await rows(node, sup) == [(None, cpid2)]
        assert await counts(node, sup) == (1, 1, 0, 1)
        assert cpid1 is not None and not node.is_alive(cpid1)
        await A.terminate_child(node, sup, cpid1)  # a pid already dead: ok
        assert await counts(node, sup) == (1, 1, 0, 1)
        # a live pid that is not a child of this supervisor is not found, and lives on
        no_child = node.spawn(_idle)
        with pytest.raises(A.SupervisorError) as ei:
            await A.terminate_child(node, sup, no_child)
        assert ei.value.reason == "not_found" and node.is_alive(no_child)
        node.exit(no_child, A.KILL)
        for op in (A.restart_child, A.delete_child):
            with pytest.raises(A.SupervisorError) as ei:
                await op(node, sup, "child1")
            assert ei.value.reason == "simple_one_for_one"


# -- children caught in a failing restart ----------------------------------------------------------------


class Flaky(A.GenServer):
    """OTP's supervisor_deadlock: its init fails while ``plan["fail"]``."""

    def __init__(self, plan: dict[str, Any]) -> None:
        self.plan = plan

    async def init(self, *args: Any) -> Any:
        self.plan["attempts"] += 1
        if self.plan["fail"]:
            raise RuntimeError("cannot start")
        return None


def flaky(plan: dict[str, Any], id: Any = "child1") -> A.ChildSpec:
    async def start_fn(parent: A.Process, *extra: Any) -> A.Pid | None:
        return await A.start_link(parent, Flaky(plan))

    return A.ChildSpec(id, start_fn, shutdown=A.BRUTAL_KILL)


async def settled(node: A.Node, sup: A.Pid, plan: dict[str, Any]) -> int:
    """The attempts once every retry already queued in the supervisor is handled."""
    await A.count_children(node, sup)
    n = plan["attempts"]
    for _ in range(3):
        await A.count_children(node, sup)
        assert plan["attempts"] == n, "the supervisor is still retrying"
    return n


async def test_hanging_restart_loop() -> None:
    async with A.Node(log_crashes=False) as node:  # real clock, huge budget: it would retry forever
        plan = {"fail": False, "attempts": 0}
        sup = await A.start_supervisor(node, [], intensity=10**9)
        cpid1 = await A.start_child(node, sup, flaky(plan))
        plan["fail"] = True
        await end(node, cpid1, "kill")
        await wait_until(lambda: plan["attempts"] >= 5, what="failing restarts")
        with pytest.raises(A.SupervisorError) as ei:
            await A.start_child(node, sup, flaky(plan))
        assert ei.value.reason == "already_present"
        for op in (A.restart_child, A.delete_child):
            with pytest.raises(A.SupervisorError) as ei:
                await op(node, sup, "child1")
            assert ei.value.reason == "restarting"
        assert await rows(node, sup) == [("child1", "restarting")]
        assert (await A.which_child(node, sup, "child1")).restarting
        assert await counts(node, sup) == (1, 0, 0, 1)
        await A.terminate_child(node, sup, "child1")
        assert await rows(node, sup) == [("child1", None)]
        n = await settled(node, sup, plan)
        plan["fail"] = False
        assert await A.restart_child(node, sup, "child1") is not None
        assert plan["attempts"] == n + 1
        # a supervisor stopped while it hangs in a restart loop does not hang
        plan["fail"] = True
        await end(node, await pid_of(node, sup, "child1"), "kill")
        await wait_until(lambda: plan["attempts"] >= n + 5, what="failing restarts")
        proc = node.process(sup)
        await A.stop_server(node, sup, A.SHUTDOWN, timeout=2)
        assert proc.exit_reason == A.SHUTDOWN and node.process_count() == 0


async def test_hanging_restart_loop_rest_for_one() -> None:
    async with A.Node(log_crashes=False) as node:
        plan = {"fail": False, "attempts": 0}
        sup = await A.start_supervisor(node, [], strategy="rest_for_one", intensity=10**9)
        cpid1 = await A.start_child(node, sup, child("child1"))
        cpid2 = await A.start_child(node, sup, flaky(plan, "child2"))
        await A.start_child(node, sup, child("child3"))
        plan["fail"] = True
        await end(node, cpid2, "kill")
        await wait_until(lambda: plan["attempts"] >= 5, what="failing restarts")
        assert await rows(node, sup) == [("child1", cpid1), ("child2", "restarting"), ("child3", None)]
        assert await counts(node, sup) == (3, 1, 0, 3)
        await A.terminate_child(node, sup, "child2")
        assert await rows(node, sup) == [("child1", cpid1), ("child2", None), ("child3", None)]
        await settled(node, sup, plan)


async def test_hanging_restart_loop_simple() -> None:
    """A dynamic child whose restart keeps failing stays in the table as
    restarting; terminate_child on its old pid removes it and stops the retries."""
    async with A.Node(log_crashes=False) as node:
        plan = {"fail": False, "attempts": 0}
        sup = await A.start_supervisor(node, [flaky(plan)], strategy="simple_one_for_one", intensity=10**9)
        cpid1 = await A.start_child(node, sup, [])
        assert cpid1 is not None
        plan["fail"] = True
        await end(node, cpid1, "kill")
        await wait_until(lambda: plan["attempts"] >= 5, what="failing restarts")
        for op in (A.restart_child, A.delete_child):
            with pytest.raises(A.SupervisorError) as ei:
                await op(node, sup, "child1")
            assert ei.value.reason == "simple_one_for_one"
        [row] = await A.which_children(node, sup)
        assert (row.id, row.pid, row.type, row.restarting) == (None, None, "worker", True)
        assert (await A.which_child(node, sup, cpid1)).restarting
        assert await counts(node, sup) == (1, 0, 0, 1)
        await A.terminate_child(node, sup, cpid1)
        assert await A.which_children(node, sup) == []
        assert await counts(node, sup) == (1, 0, 0, 0)
        await settled(node, sup, plan)
        # and a supervisor stopped meanwhile does not hang
        plan["fail"] = False
        cpid2 = await A.start_child(node, sup, [])
        plan["fail"] = True
        await end(node, cpid2, "kill")
        await wait_until(lambda: plan["attempts"] >= 10, what="failing restarts")
        proc = node.process(sup)
        await A.stop_server(node, sup, A.SHUTDOWN, timeout=2)
        assert proc.exit_reason == A.SHUTDOWN and node.process_count() == 0


class StillClock:
    """A clock that does not move: every restart falls in the same period."""

    def __call__(self) -> float:
        return 1000.0


async def test_simple_one_for_one_escalation() -> None:
    """A dynamic child whose restarts keep failing uses up the intensity: the
    supervisor stops its other children and exits ``shutdown``."""
    async with A.Node(clock=StillClock(), log_crashes=False) as node:
        plan = {"fail": False, "attempts": 0}
        sup = await A.start_supervisor(node, [flaky(plan)], strategy="simple_one_for_one", intensity=4)
        proc = node.process(sup)
        cpid1 = await A.start_child(node, sup, [])
        cpid2 = await A.start_child(node, sup, [])
        assert cpid2 is not None
        plan["fail"] = True
        await end(node, cpid1, "kill")
        assert await exits_shutdown(node, proc)
        assert plan["attempts"] == 2 + 4  # two starts, then 4 failed restarts within intensity 4
        assert not node.is_alive(cpid2) and node.process_count() == 0


async def test_hanging_restart_loop_simple_counts_restarting_children() -> None:
    """count_restarting_children: the restarting child counts as a spec
    (worker) but not as active; once its restart succeeds it is active again."""
    async with A.Node(log_crashes=False) as node:
        plan = {"fail": False, "attempts": 0}
        sup = await A.start_supervisor(node, [flaky(plan)], strategy="simple_one_for_one", intensity=10**9)
        pids = [await A.start_child(node, sup, []) for _ in range(3)]
        assert await counts(node, sup) == (1, 3, 0, 3)
        plan["fail"] = True
        await end(node, pids[0], "kill")
        await end(node, pids[1], "kill")
        await wait_until(lambda: plan["attempts"] >= 10, what="failing restarts")
        assert await counts(node, sup) == (1, 1, 0, 3)
        plan["fail"] = False
        await wait_until(lambda: all(not r.restarting for r in node.process(sup).behaviour.child_rows()))
        assert await counts(node, sup) == (1, 3, 0, 3)


# -- do_not_save_start_parameters_for_temporary_children -------------------------------------------------


class Payload:
    """A start argument the test can watch through a weak reference."""


async def forgetful(proc: A.Process, payload: Payload) -> None:
    """A child that needs its start argument only to start."""
    del payload
    await proc.receive()


async def _start_static(node: A.Node, sup: A.Pid, restart: str) -> tuple[A.Pid | None, weakref.ref[Payload]]:
    payload = Payload()
    ref = weakref.ref(payload)
    pid = await A.start_child(node, sup, A.worker("child", forgetful, payload, restart=restart))
    return pid, ref


async def _start_dynamic(node: A.Node, sup: A.Pid) -> tuple[A.Pid | None, weakref.ref[Payload]]:
    payload = Payload()
    ref = weakref.ref(payload)
    pid = await A.start_child(node, sup, (payload,))
    return pid, ref


async def _alive_after_next_message(node: A.Node, sup: A.Pid, ref: weakref.ref[Payload]) -> bool:
    # the supervisor's loop holds the message it handled last (for crash
    # reports) until it takes the next one: give it one
    await A.count_children(node, sup)
    gc.collect()
    return ref() is not None


@pytest.mark.parametrize("strategy", ["one_for_one", "one_for_all", "rest_for_one"])
async def test_do_not_save_start_parameters_for_temporary_children(strategy: str) -> None:
    async with A.Node() as node:
        for restart, kept in ((A.PERMANENT, True), (A.TRANSIENT, True), (A.TEMPORARY, False)):
            sup = await A.start_supervisor(node, [], strategy=strategy)
            pid, ref = await _start_static(node, sup, restart)
            assert pid is not None and node.is_alive(pid)
            assert await _alive_after_next_message(node, sup, ref) is kept, restart
            await A.stop_server(node, sup)
        # nor for those of the init specs
        payload = Payload()
        ref = weakref.ref(payload)
        sup = await A.start_supervisor(
            node, [A.worker("child", forgetful, payload, restart=A.TEMPORARY)], strategy=strategy
        )
        del payload
        assert not await _alive_after_next_message(node, sup, ref)
        assert (await A.count_children(node, sup))["active"] == 1
        await A.stop_server(node, sup)


async def test_do_not_save_start_parameters_for_temporary_children_simple() -> None:
    async with A.Node(log_crashes=False) as node:
        for restart, kept in ((A.PERMANENT, True), (A.TRANSIENT, True), (A.TEMPORARY, False)):
            template = A.worker("child", forgetful, restart=restart)
            sup = await A.start_supervisor(node, [template], strategy="simple_one_for_one")
            pid, ref = await _start_dynamic(node, sup)
            assert pid is not None and node.is_alive(pid)
            assert await _alive_after_next_message(node, sup, ref) is kept, restart
            await A.stop_server(node, sup)


async def test_simple_one_for_one_corruption() -> None:
    """OTP-16804: after a temporary dynamic child died, new ones still keep no arguments."""
    async with A.Node(log_crashes=False) as node:
        template = A.worker("child", forgetful, restart=A.TEMPORARY)
        sup = await A.start_supervisor(node, [template], strategy="simple_one_for_one")
        first, _ = await _start_dynamic(node, sup)
        assert first is not None
        node.exit(first, "abnormal")
        await wait_until(lambda: not node.is_alive(first))
        second, ref = await _start_dynamic(node, sup)
        assert second is not None and node.is_alive(second)
        assert not await _alive_after_next_message(node, sup, ref)


async def test_get_childspec_of_a_running_temporary_child_has_no_start() -> None:
    async with A.Node() as node:
        sup = await A.start_supervisor(node, [])
        await A.start_child(node, sup, A.worker("t", forgetful, Payload(), restart=A.TEMPORARY))
        got = await A.get_childspec(node, sup, "t")
        assert (got.id, got.restart, got.type) == ("t", A.TEMPORARY, "worker")
        with pytest.raises(A.StartError):
            await got.start(node.process(sup))


# -- significant children and auto_shutdown ----------------------------------------------------------------

MODES = [A.NEVER, A.ANY_SIGNIFICANT, A.ALL_SIGNIFICANT]


@pytest.mark.parametrize("restart", [A.TEMPORARY, A.TRANSIENT])
@pytest.mark.parametrize("auto_shutdown", MODES)
async def test_nonsignificant_children_never_shut_the_supervisor_down(auto_shutdown: str, restart: str) -> None:
    """nonsignificant_temporary / nonsignificant_transient."""
    async with A.Node() as node:
        sup = await A.start_supervisor(node, [], intensity=5, auto_shutdown=auto_shutdown)
        await A.start_child(node, sup, child("child1", restart=restart))
        await A.terminate_child(node, sup, "child1")
        assert await still_up(node, sup)
        for how in ("kill", "abnormal", "normal"):
            if restart == A.TEMPORARY:
                await A.start_child(node, sup, child("child1", restart=restart))
            elif (await A.which_child(node, sup, "child1")).pid is None:
                await A.restart_child(node, sup, "child1")
            await end(node, await pid_of(node, sup, "child1"), how)
            assert await still_up(node, sup), how


async def test_significant_temporary() -> None:
    async with A.Node() as node:
        specs = [
            child("child1", restart=A.TEMPORARY, significant=True),
            child("child2", restart=A.TEMPORARY, significant=True),
            child("child3", restart=A.TEMPORARY),
        ]
        sup1 = await A.start_supervisor(node, specs, intensity=5, auto_shutdown=A.ANY_SIGNIFICANT)
        # terminated through the supervisor: no auto-shutdown
        await A.terminate_child(node, sup1, "child1")
        assert await still_up(node, sup1) and [r[0] for r in await rows(node, sup1)] == ["child2", "child3"]
        # killed, abnormal or normal exit of a significant temporary child: auto-shutdown
        await A.start_child(node, sup1, specs[0])
        for how in ("kill", "abnormal", "normal"):
            sup = sup1 if how == "kill" else await A.start_supervisor(node, specs, auto_shutdown=A.ANY_SIGNIFICANT)
            others = [await pid_of(node, sup, c) for c in ("child2", "child3")]
            proc = node.process(sup)
            await end(node, await pid_of(node, sup, "child1"), how)
            assert await exits_shutdown(node, proc), how
            assert not any(node.is_alive(p) for p in others)
        # all_significant: only the last significant child's exit does it
        sup4 = await A.start_supervisor(node, specs, intensity=5, auto_shutdown=A.ALL_SIGNIFICANT)
        proc4 = node.process(sup4)
        await end(node, await pid_of(node, sup4, "child1"), "normal")
        assert await still_up(node, sup4)
        await end(node, await pid_of(node, sup4, "child2"), "normal")
        assert await exits_shutdown(node, proc4)


async def test_significant_transient() -> None:
    async with A.Node() as node:
        specs = [
            child("child1", restart=A.TRANSIENT, significant=True),
            child("child2", restart=A.TRANSIENT, significant=True),
            child("child3", restart=A.TRANSIENT),
        ]
        sup1 = await A.start_supervisor(node, specs, intensity=5, auto_shutdown=A.ANY_SIGNIFICANT)
        proc1 = node.process(sup1)
        await A.terminate_child(node, sup1, "child1")
        assert await still_up(node, sup1)
        await A.restart_child(node, sup1, "child1")
        # killed or abnormal: restarted, no auto-shutdown
        for how in ("kill", "abnormal"):
            old = await pid_of(node, sup1, "child1")
            await end(node, old, how)
            assert await still_up(node, sup1), how
            assert (await pid_of(node, sup1, "child1")) != old
        # normal exit: not restarted, so auto-shutdown
        await end(node, await pid_of(node, sup1, "child1"), "normal")
        assert await exits_shutdown(node, proc1)
        # all_significant
        sup2 = await A.start_supervisor(node, specs, intensity=5, auto_shutdown=A.ALL_SIGNIFICANT)
        proc2 = node.process(sup2)
        await end(node, await pid_of(node, sup2, "child1"), "normal")
        assert await still_up(node, sup2)
        await end(node, await pid_of(node, sup2, "child2"), "normal")
        assert await exits_shutdown(node, proc2)


async def test_significant_all_counts_a_restarting_significant_child_as_running() -> None:
    """all_significant checks the significant children that still have a pid
    or are being restarted (OTP's ``pid =/= undefined``)."""
    async with A.Node(log_crashes=False) as node:
        plan = {"fail": False, "attempts": 0}
        base = flaky(plan, "flaky")
        restarting = A.ChildSpec("flaky", base.start, A.TRANSIENT, significant=True)
        specs = [child("child1", restart=A.TRANSIENT, significant=True), restarting]
        sup = await A.start_supervisor(node, specs, intensity=10**9, auto_shutdown=A.ALL_SIGNIFICANT)
        plan["fail"] = True
        await end(node, await pid_of(node, sup, "flaky"), "kill")
        await wait_until(lambda: plan["attempts"] >= 5, what="failing restarts")
        await end(node, await pid_of(node, sup, "child1"), "normal")
        assert await still_up(node, sup)
        assert await rows(node, sup) == [("child1", None), ("flaky", "restarting")]
        await A.stop_server(node, sup, A.SHUTDOWN, timeout=2)


def test_significant_simple() -> None:
    """simple_one_for_one takes no auto_shutdown (OTP: ``{supervisor_data,
    {bad_combination, _}}``; here a ValueError before the start, as for any bad flag)."""
    for mode in (A.ANY_SIGNIFICANT, A.ALL_SIGNIFICANT):
        with pytest.raises(ValueError, match="bad combination"):
            A.Supervisor([child("child1")], strategy="simple_one_for_one", auto_shutdown=mode)
    A.Supervisor([child("child1")], strategy="simple_one_for_one", auto_shutdown=A.NEVER)


@pytest.mark.parametrize("auto_shutdown", [A.ANY_SIGNIFICANT, A.ALL_SIGNIFICANT])
@pytest.mark.parametrize("strategy", ["one_for_one", "one_for_all", "rest_for_one"])
async def test_significant_bystander(strategy: str, auto_shutdown: str) -> None:
    """Significant children stopped because a sibling died do not trigger auto-shutdown."""
    async with A.Node() as node:
        specs = [
            child("child1", restart=A.TRANSIENT, significant=True),
            child("child2", restart=A.TRANSIENT),
            child("child3", restart=A.TRANSIENT, significant=True),
        ]
        sup = await A.start_supervisor(node, specs, strategy=strategy, intensity=5, auto_shutdown=auto_shutdown)
        before = {cid: await pid_of(node, sup, cid) for cid in ("child1", "child2", "child3")}
        await end(node, before["child2"], "kill")
        assert await still_up(node, sup)
        after = {cid: await pid_of(node, sup, cid) for cid in ("child1", "child2", "child3")}
        replaced = {"one_for_one": {"child2"}, "one_for_all": set(before), "rest_for_one": {"child2", "child3"}}
        assert {cid for cid in before if after[cid] != before[cid]} == replaced[strategy]


async def test_significant_escalation() -> None:
    async with A.Node() as node:
        for significant in (True, False):
            sup1 = await A.start_supervisor(node, [], auto_shutdown=A.ANY_SIGNIFICANT)
            proc1 = node.process(sup1)
            sup_spec = A.supervisor_spec(
                "sup1", [], restart=A.TRANSIENT, significant=significant, auto_shutdown=A.ANY_SIGNIFICANT
            )
            child_sup = await A.start_child(node, sup1, sup_spec)
            assert child_sup is not None
            cpid = await A.start_child(node, child_sup, child("child1", restart=A.TRANSIENT, significant=True))
            child_proc = node.process(child_sup)
            await end(node, cpid, "normal")
            assert await exits_shutdown(node, child_proc)
            if significant:  # the nested supervisor's auto-shutdown shuts its parent down in turn
                assert await exits_shutdown(node, proc1)
            else:
                assert await still_up(node, sup1)
                await A.stop_server(node, sup1)


async def test_child_specs_significant_validation() -> None:
    """child_specs_map: significant must be a bool, never with a permanent
    child, and never under a supervisor whose auto_shutdown is never."""

    async def start_fn(parent: A.Process, *extra: Any) -> A.Pid | None:
        return await A.start_link(parent, Child)

    with pytest.raises(ValueError, match="bad significant"):
        A.ChildSpec("c", start_fn, A.TRANSIENT, significant="maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bad combination"):
        A.ChildSpec("c", start_fn, A.PERMANENT, significant=True)
    with pytest.raises(ValueError, match="bad auto_shutdown"):
        A.Supervisor([], auto_shutdown="sometimes")
    significant = A.ChildSpec("c", start_fn, A.TRANSIENT, significant=True)
    async with A.Node() as node:
        with pytest.raises(A.StartError) as ei:
            await A.start_supervisor(node, [significant], auto_shutdown=A.NEVER)
        assert ei.value.reason == (
            "start_spec",
            ("bad_combination", (("auto_shutdown", "never"), ("significant", True))),
        )
        sup = await A.start_supervisor(node, [])
        with pytest.raises(A.SupervisorError) as e2:
            await A.start_child(node, sup, significant)
        assert e2.value.reason[0] == "bad_combination"
        assert await A.which_children(node, sup) == []
        for mode in (A.ANY_SIGNIFICANT, A.ALL_SIGNIFICANT):
            other = await A.start_supervisor(node, [significant], auto_shutdown=mode)
            assert (await A.get_childspec(node, other, "c")).significant
            await A.stop_server(node, other)


# -- which_child -----------------------------------------------------------------------------------------------


async def test_which_children() -> None:
    async with A.Node() as node:
        sup = await A.start_supervisor(node, [])
        with pytest.raises(A.SupervisorError) as ei:
            await A.which_child(node, sup, "childx")
        assert ei.value.reason == "not_found"
        c1 = await A.start_child(node, sup, child("child1"))
        c2 = await A.start_child(node, sup, child("child2"))
        assert await rows(node, sup) == [("child1", c1), ("child2", c2)]
        assert (await A.which_child(node, sup, "child2")).pid == c2
        await A.terminate_child(node, sup, "child1")
        row = await A.which_child(node, sup, "child1")
        assert (row.id, row.pid, row.type, row.restarting) == ("child1", None, "worker", False)
        await A.delete_child(node, sup, "child1")
        with pytest.raises(A.SupervisorError):
            await A.which_child(node, sup, "child1")


async def test_which_children_simple_one_for_one() -> None:
    async with A.Node() as node:
        sup = await A.start_supervisor(node, [child("child", restart=A.TEMPORARY)], strategy="simple_one_for_one")
        c1 = await A.start_child(node, sup, [])
        c2 = await A.start_child(node, sup, [])
        assert await rows(node, sup) == [(None, c1), (None, c2)]
        assert (await A.which_child(node, sup, c1)).pid == c1
        await A.terminate_child(node, sup, c1)
        with pytest.raises(A.SupervisorError) as ei:
            await A.which_child(node, sup, c1)
        assert ei.value.reason == "not_found"
        with pytest.raises(A.SupervisorError) as ei:
            await A.which_child(node, sup, "not_a_pid")
        assert ei.value.reason == "simple_one_for_one"
