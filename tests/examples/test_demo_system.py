"""The demo system: its tree, strategies and restart types, its trouble, and the CLI."""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path
from typing import Any

import actors
from examples import demo_system as demo
from tests.conftest import wait_until

REPO = Path(__file__).resolve().parents[2]
STRATEGIES = {"one_for_one", "one_for_all", "rest_for_one", "simple_one_for_one"}


class Recorder(actors.Instrument):
    """Keeps the events the tests look at."""

    def __init__(self) -> None:
        self.exits: list[actors.Exited] = []
        self.restarts: list[actors.Restarted] = []
        self.gave_up: list[actors.SupervisorGaveUp] = []

    def exited(self, event: actors.Exited) -> None:
        self.exits.append(event)

    def restarted(self, event: actors.Restarted) -> None:
        self.restarts.append(event)

    def supervisor_gave_up(self, event: actors.SupervisorGaveUp) -> None:
        self.gave_up.append(event)

    def crashes(self) -> list[actors.Exited]:
        return [e for e in self.exits if isinstance(e.reason, Exception)]


async def _supervisors(node: actors.Node, root: actors.Pid) -> dict[str, actors.Budget]:
    """Every supervisor of the tree (by registered name) and its budget, walking which_children."""
    found: dict[str, actors.Budget] = {}
    todo = [root]
    while todo:
        sup = todo.pop()
        info = node.info(sup)
        assert info.kind == "supervisor"
        found[info.name or str(sup)] = actors.budget(node, sup)
        for row in await actors.which_children(node, sup):
            if row.type == "supervisor":
                assert row.pid is not None, f"supervisor child {row.id!r} is not running"
                todo.append(row.pid)
    return found


def _alive(node: actors.Node, name: str) -> actors.Pid | None:
    return node.whereis(name)


async def test_tree_builds_with_all_its_parts() -> None:
    async with actors.Node(log_crashes=False) as node:
        handles = await demo.build(node, seed=1, traffic=False)
        assert node.whereis(demo.ROOT) == handles.root
        assert handles.seed == 1
        rows = await actors.which_children(node, handles.root)
        assert [r.id for r in rows] == ["pool", "payments", "chat", "noisy_customer"]
        assert all(r.pid is not None and node.is_alive(r.pid) for r in rows)
        names = set(node.registered())
        expected = {demo.room_name(r) for r in demo.ROOMS} | {"payments", "ledger", "pool", "noisy_customer"}
        expected |= {f"conn:{i}" for i in range(1, 5)}
        assert expected <= names
        labels = {node.info(pid).label for pid in node.processes()}
        assert {"PaymentWorker", "Ledger", "PoolManager", "Connection", "Room", "NoisyCustomer"} <= labels
        # the payment worker's state has secrets for an observer to redact
        state = await actors.get_state(node, "payments")
        assert state["api_key"].startswith("sk_live_") and "last_card_token" in state
        await handles.stop()
        assert not node.is_alive(handles.root)
        assert node.process_count() == 0


async def test_every_strategy_and_restart_type_is_present() -> None:
    async with actors.Node(log_crashes=False) as node:
        handles = await demo.build(node, seed=1)
        sups = await _supervisors(node, handles.root)
        assert set(sups) == {
            demo.ROOT,
            demo.POOL_SUP,
            demo.PAYMENTS_SUP,
            demo.CHAT_SUP,
            demo.ROOMS_SUP,
            demo.SESSIONS_SUP,
        }
        assert {b.strategy for b in sups.values()} == STRATEGIES
        assert sups[demo.PAYMENTS_SUP].strategy == "one_for_all"
        assert sups[demo.POOL_SUP].strategy == "rest_for_one"
        assert sups[demo.SESSIONS_SUP].strategy == "simple_one_for_one"
        assert all(b.used < b.intensity for b in sups.values())
        # a supervisor of supervisors
        chat = await actors.which_children(node, demo.CHAT_SUP)
        assert [r.type for r in chat] == ["supervisor", "supervisor"]
        # restart types and shutdowns, as declared in the specs the tree was started with
        specs = [spec for group in handles.specs.values() for spec in group]
        assert {s.restart for s in specs} == {actors.PERMANENT, actors.TRANSIENT, actors.TEMPORARY}
        assert any(s.shutdown == actors.BRUTAL_KILL for s in specs)
        assert handles.specs[demo.SESSIONS_SUP][0].restart == actors.TRANSIENT
        # the traffic fills the sessions supervisor
        await wait_until(lambda: _session_count(node) >= 40, timeout=10, what="sessions to log in")
        await handles.stop()


def _session_count(node: actors.Node) -> int:
    return sum(1 for pid in node.processes() if node.info(pid).label == "SessionWorker")


async def test_restart_types_and_strategies_behave_as_declared() -> None:
    async with actors.Node(log_crashes=False) as node:
        rec = Recorder()
        node.add_instrument(rec)
        handles = await demo.build(node, seed=3, traffic=False)

        # temporary: killed, never restarted, and its spec is gone
        noisy = node.whereis("noisy_customer")
        assert noisy is not None
        node.exit(noisy, actors.KILL)
        rows = await actors.which_children(node, handles.root)
        assert "noisy_customer" not in [r.id for r in rows]
        assert node.whereis("noisy_customer") is None

        # permanent under rest_for_one: conn:2 and the ones after it restart, conn:1 does not
        before = {i: node.whereis(f"conn:{i}") for i in range(1, 5)}
        node.exit(before[2], actors.KILL)  # type: ignore[arg-type]
        await wait_until(
            lambda: all(_alive(node, f"conn:{i}") not in (None, before[i]) for i in (2, 3, 4)),
            what="conn:2..4 to restart",
        )
        assert node.whereis("conn:1") == before[1]

        # permanent under one_for_all: the ledger dies, the payment worker restarts with it
        worker, ledger = node.whereis("payments"), node.whereis("ledger")
        node.exit(ledger, actors.KILL)  # type: ignore[arg-type]
        await wait_until(
            lambda: _alive(node, "payments") not in (None, worker) and _alive(node, "ledger") not in (None, ledger),
            what="payments to restart",
        )

        # transient: a crash is restarted, a logout is not
        sid = await actors.start_child(node, demo.SESSIONS_SUP, ("tester",))
        assert sid is not None
        node.cast(sid, ("frame", demo.bad_frame()))
        restarted = await wait_until(
            lambda: [r for r in rec.restarts if r.old_pid == sid], what="the crashed session to restart"
        )
        new = restarted[0].new_pid
        assert new is not None and node.is_alive(new)
        crash = next(e for e in rec.exits if e.pid == sid)
        assert isinstance(crash.reason, ValueError)
        assert isinstance(crash.reason.__cause__, UnicodeDecodeError)
        n_restarts = len(rec.restarts)
        node.cast(new, ("frame", demo.frame("logout")))
        await wait_until(lambda: not node.is_alive(new), what="the session to log out")
        assert (await actors.count_children(node, demo.SESSIONS_SUP))["active"] == 0
        assert len(rec.restarts) == n_restarts
        assert node.is_alive(handles.root)
        await handles.stop()


async def test_traffic_makes_crashes_and_restarts_and_the_root_survives() -> None:
    async with actors.Node(log_crashes=False) as node:
        rec = Recorder()
        node.add_instrument(rec)
        handles = await demo.build(node, seed=1)
        await wait_until(lambda: rec.crashes() and rec.restarts, timeout=15, what="a crash and a restart")
        crash = rec.crashes()[0]
        assert crash.reason.__traceback__ is not None
        assert crash.reason.__cause__ is not None  # raised from a helper, with a chained cause
        tb = crash.format_traceback()
        assert tb is not None and "The above exception was the direct cause" in tb
        # the noisy customer makes one mailbox fill up (then drain)
        await wait_until(lambda: _max_mailbox(node) >= 100, timeout=10, what="a burst to fill a mailbox")
        await wait_until(lambda: _max_mailbox(node) < 20, timeout=10, what="the burst to drain")
        assert node.is_alive(handles.root)
        assert not rec.gave_up
        for name in (demo.POOL_SUP, demo.PAYMENTS_SUP, demo.CHAT_SUP, demo.ROOMS_SUP, demo.SESSIONS_SUP):
            assert node.whereis(name) is not None, name
        await handles.stop()
        assert node.process_count() == 0


def _max_mailbox(node: actors.Node) -> int:
    best = 0
    for pid in node.processes():
        try:
            best = max(best, node.info(pid).mailbox_len)
        except actors.NoProcess:
            pass
    return best


async def test_an_operator_killing_fast_pushes_payments_over() -> None:
    async with actors.Node(log_crashes=False) as node:
        rec = Recorder()
        node.add_instrument(rec)
        handles = await demo.build(node, seed=5, traffic=False)
        payments_sup = node.whereis(demo.PAYMENTS_SUP)
        budget = actors.budget(node, demo.PAYMENTS_SUP)
        for _ in range(budget.intensity + 1):
            # which_children answers once the previous restart is complete (a kill
            # while the worker is still starting would hold the restart up: see the
            # start_link timeout)
            rows = await actors.which_children(node, payments_sup)  # type: ignore[arg-type]
            pid = next(r.pid for r in rows if r.id == "worker")
            assert pid is not None and node.whereis("payments") == pid
            node.exit(pid, actors.KILL)
        await wait_until(lambda: rec.gave_up, what="payments_sup to give up")
        assert rec.gave_up[0].supervisor == payments_sup
        # the root restarts the whole payments subtree
        await wait_until(
            lambda: node.whereis(demo.PAYMENTS_SUP) not in (None, payments_sup) and node.whereis("payments"),
            what="payments_sup to come back",
        )
        assert node.is_alive(handles.root)
        assert actors.budget(node, handles.root).used == 1
        await handles.stop()


async def test_a_seed_replays_the_same_choices() -> None:
    async def first_state(seed: int) -> Any:
        async with actors.Node(log_crashes=False) as node:
            handles = await demo.build(node, seed=seed, traffic=False)
            state = await actors.get_state(node, "payments")
            await handles.stop()
            return state

    a, b, c = await first_state(11), await first_state(11), await first_state(12)
    assert a == b and a["api_key"] != c["api_key"]

    async def responses(seed: str) -> list[dict[str, Any]]:
        gateway = demo.FlakyGateway(random.Random(seed), first=True)
        return [await gateway.authorize(1250, "EUR", "tok_4242_x") for _ in range(12)]

    r1, r2 = await responses("s"), await responses("s")
    assert r1 == r2
    corrupted = [r for r in r1 if r["status"] == "approved" and ("auth_code" not in r or "," in r["amount"])]
    assert corrupted, "the gateway corrupts a response within its first calls"


async def test_cli_runs_prints_status_and_exits_zero() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "examples.payments",
        "--duration",
        "3",
        "--seed",
        "1",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    text = out.decode()
    assert proc.returncode == 0, err.decode()
    status = [line for line in text.splitlines() if line.startswith("[") and "procs=" in line]
    assert len(status) >= 2, text
    assert all("restarts=" in line and "last_crash=" in line for line in status)
    assert "stopped:" in text
