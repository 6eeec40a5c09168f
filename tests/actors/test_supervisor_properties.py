"""Property tests: random supervision trees under random kill sequences.

Within the restart budget a tree always returns to its shape; beyond it the
give-up climbs exactly as far as the model says (the lowest ancestor whose
budget is not exhausted absorbs it), and exactly the right subtrees are renewed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import actors as A
from tests.conftest import wait_until

PERIOD = 10.0
STRATEGIES = ["one_for_one", "one_for_all", "rest_for_one"]
WAIT = 2.0  # seconds; small trees settle in milliseconds, and a failing example shrinks faster
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass
class Sup:
    """Model of a supervisor: its children are nested ``Sup`` or worker ids."""

    id: str
    strategy: str
    intensity: int
    children: list[Sup | str] = field(default_factory=list)

    def walk(self) -> Iterator[Sup | str]:
        """Every node of the subtree, this one included."""
        yield self
        for c in self.children:
            if isinstance(c, Sup):
                yield from c.walk()
            else:
                yield c


def ident(node: Sup | str) -> str:
    return node.id if isinstance(node, Sup) else node


@st.composite
def trees(draw: st.DrawFn, intensity: st.SearchStrategy[int], path: str = "r", depth: int = 0) -> Sup:
    sup = Sup(path, draw(st.sampled_from(STRATEGIES)), draw(intensity))
    for i in range(draw(st.integers(1, 3))):
        cid = f"{path}.{i}"
        if depth < 2 and draw(st.booleans()):
            sup.children.append(draw(trees(intensity, cid, depth + 1)))
        else:
            sup.children.append(cid)
    return sup


# -- the real tree ---------------------------------------------------------------------------------------


async def idle(proc: A.Process) -> None:
    while True:
        if await proc.receive() == "crash":
            raise RuntimeError("crash")


def specs(sup: Sup) -> list[A.ChildSpec]:
    return [
        A.supervisor_spec(c.id, specs(c), strategy=c.strategy, intensity=c.intensity, period=PERIOD)
        if isinstance(c, Sup)
        else A.worker(c, idle)
        for c in sup.children
    ]


def expected_shape(sup: Sup) -> Any:
    return (sup.strategy, tuple((c.id, expected_shape(c)) if isinstance(c, Sup) else c for c in sup.children))


def live_shape(node: A.Node, pid: A.Pid) -> Any:
    """The shape of the running tree, or None while any part is down or restarting."""
    if not node.is_alive(pid):
        return None
    sup = node.process(pid).behaviour
    if not isinstance(sup, A.Supervisor):
        return None
    out: list[Any] = []
    for row in sup.child_rows():
        if row.pid is None or not node.is_alive(row.pid):
            return None
        if row.type == "supervisor":
            sub = live_shape(node, row.pid)
            if sub is None:
                return None
            out.append((row.id, sub))
        else:
            out.append(row.id)
    return (sup.strategy, tuple(out))


def live_pids(node: A.Node, root_id: str, pid: A.Pid) -> dict[str, A.Pid]:
    out = {root_id: pid}
    sup = node.process(pid).behaviour
    assert isinstance(sup, A.Supervisor)
    for row in sup.child_rows():
        assert row.pid is not None
        if row.type == "supervisor":
            out.update(live_pids(node, str(row.id), row.pid))
        else:
            out[str(row.id)] = row.pid
    return out


class GaveUp(A.Instrument):
    def __init__(self) -> None:
        self.sups: list[A.Pid] = []

    def supervisor_gave_up(self, event: A.SupervisorGaveUp) -> None:
        self.sups.append(event.supervisor)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run(coro: Coroutine[Any, Any, None]) -> None:
    """Run one example on a fresh loop; fail it if it leaves tasks behind."""

    async def main() -> None:
        await coro
        current = asyncio.current_task()
        leaked = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        assert not leaked, leaked

    asyncio.run(main())


async def start_tree(node: A.Node, root: Sup) -> A.Pid:
    return await A.start_supervisor(node, specs(root), strategy=root.strategy, intensity=root.intensity, period=PERIOD)


async def settled(node: A.Node, root: Sup, root_pid: A.Pid, size: int) -> None:
    shape = expected_shape(root)
    await wait_until(
        lambda: live_shape(node, root_pid) == shape and node.process_count() == size,
        what="the tree to come back",
        timeout=WAIT,
    )


# -- within the budget ---------------------------------------------------------------------------------------


@SETTINGS
@given(root=trees(st.integers(1, 3)), kills=st.lists(st.tuples(st.integers(0, 99), st.booleans()), max_size=6))
def test_tree_returns_to_its_shape_within_the_restart_budget(root: Sup, kills: list[tuple[int, bool]]) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        events = GaveUp()
        async with A.Node(clock=clock, log_crashes=False) as node:
            node.add_instrument(events)
            root_pid = await start_tree(node, root)
            size = sum(1 for _ in root.walk())
            await settled(node, root, root_pid, size)
            for index, as_crash in kills:
                pids = live_pids(node, root.id, root_pid)
                targets = sorted(k for k in pids if k != root.id)
                victim = pids[targets[index % len(targets)]]
                is_worker = not isinstance(node.process(victim).behaviour, A.Supervisor)
                if as_crash and is_worker:
                    node.send(victim, "crash")
                else:
                    node.exit(victim, A.KILL)
                await wait_until(lambda: not node.is_alive(victim), timeout=WAIT)  # noqa: B023
                await settled(node, root, root_pid, size)
                assert victim not in live_pids(node, root.id, root_pid).values()
                clock.now += PERIOD + 1  # the next kill starts a fresh period
            assert events.sups == []

    run(scenario())


# -- beyond the budget ---------------------------------------------------------------------------------------


@dataclass
class Outcome:
    gave_up: list[str]
    """Supervisors that give up, lowest first."""
    renewed: set[str]
    """Every node (supervisor or worker) that ends up with a new pid."""
    root_alive: bool


class Model:
    """What OTP supervisors do when workers die and the clock stands still."""

    def __init__(self, root: Sup) -> None:
        self.root = root
        self.parent: dict[str, Sup] = {}
        self.sups: dict[str, Sup] = {}
        for n in root.walk():
            if isinstance(n, Sup):
                self.sups[n.id] = n
                for c in n.children:
                    self.parent[ident(c)] = n
        self.used = dict.fromkeys(self.sups, 0)

    def kill(self, worker: str) -> Outcome:
        gave_up: list[str] = []
        child: str = worker
        while True:
            sup = self.parent[child]
            self.used[sup.id] += 1
            if self.used[sup.id] <= sup.intensity:
                ids = [ident(c) for c in sup.children]
                at = ids.index(child)
                group = {"one_for_one": [at], "one_for_all": range(len(ids)), "rest_for_one": range(at, len(ids))}
                renewed: set[str] = set()
                for i in group[sup.strategy]:
                    for n in _subtree(sup.children[i]):
                        renewed.add(ident(n))
                        if isinstance(n, Sup):
                            self.used[n.id] = 0  # a fresh supervisor, a fresh budget
                return Outcome(gave_up, renewed, True)
            gave_up.append(sup.id)
            if sup is self.root:
                return Outcome(gave_up, set(), False)
            child = sup.id


def _subtree(n: Sup | str) -> Iterator[Sup | str]:
    return n.walk() if isinstance(n, Sup) else iter([n])


@SETTINGS
@given(root=trees(st.integers(0, 2)), kills=st.lists(st.integers(0, 99), min_size=1, max_size=8))
def test_give_up_reaches_exactly_the_lowest_ancestor_with_budget_left(root: Sup, kills: list[int]) -> None:
    async def scenario() -> None:
        events = GaveUp()
        model = Model(root)
        async with A.Node(clock=FakeClock(), log_crashes=False) as node:
            node.add_instrument(events)
            root_pid = await start_tree(node, root)
            size = sum(1 for _ in root.walk())
            await settled(node, root, root_pid, size)
            for index in kills:
                before = live_pids(node, root.id, root_pid)
                workers = sorted(k for k in before if k not in model.sups)
                victim = workers[index % len(workers)]
                expect = model.kill(victim)
                events.sups.clear()
                node.exit(before[victim], A.KILL)
                if not expect.root_alive:
                    await wait_until(lambda: node.process_count() == 0, what="the whole tree to stop", timeout=WAIT)
                    assert events.sups == [before[s] for s in expect.gave_up]
                    return
                await settled(node, root, root_pid, size)
                after = live_pids(node, root.id, root_pid)
                assert {k for k in before if after[k] != before[k]} == expect.renewed
                assert events.sups == [before[s] for s in expect.gave_up]
                assert {s: A.budget(node, after[s]).used for s in model.sups} == model.used

    run(scenario())


# -- significant children and auto_shutdown ---------------------------------------------------------------


@dataclass
class Kid:
    id: str
    restart: str
    significant: bool
    running: bool = True


class AutoShutdownModel:
    """OTP's supervisor with ``auto_shutdown`` (do_restart/do_auto_shutdown), for
    one flat supervisor whose children are transient or temporary."""

    def __init__(self, strategy: str, mode: str, kids: list[Kid]) -> None:
        self.strategy, self.mode, self.kids = strategy, mode, kids
        self.alive = True

    def act(self, kid: Kid, how: str) -> None:
        if how == "terminate":  # by the supervisor: never an auto-shutdown
            kid.running = False
            if kid.restart == A.TEMPORARY:
                self.kids.remove(kid)
            return
        if how == "abnormal" and kid.restart == A.TRANSIENT:  # restarted, with its group
            at = self.kids.index(kid)
            group = {"one_for_one": [kid], "one_for_all": list(self.kids), "rest_for_one": self.kids[at:]}
            for k in group[self.strategy]:
                if k is not kid and k.restart == A.TEMPORARY:
                    self.kids.remove(k)  # a temporary bystander is dropped, not restarted
                else:
                    k.running = True
            return
        kid.running = False  # ended by itself and not restarted
        if kid.restart == A.TEMPORARY:
            self.kids.remove(kid)
        if kid.significant and (
            self.mode == A.ANY_SIGNIFICANT or not any(k.significant and k.running for k in self.kids)
        ):
            self.alive = False


async def ends_by_message(proc: A.Process) -> None:
    while True:
        msg = await proc.receive()
        if msg == "stop":
            return
        if msg == "crash":
            raise RuntimeError("crash")


@st.composite
def kid_lists(draw: st.DrawFn) -> list[Kid]:
    n = draw(st.integers(1, 4))
    out = []
    for i in range(n):
        restart = draw(st.sampled_from([A.TRANSIENT, A.TEMPORARY]))
        out.append(Kid(f"k{i}", restart, draw(st.booleans())))
    return out


@SETTINGS
@given(
    strategy=st.sampled_from(STRATEGIES),
    mode=st.sampled_from([A.ANY_SIGNIFICANT, A.ALL_SIGNIFICANT]),
    kids=kid_lists(),
    steps=st.lists(st.tuples(st.integers(0, 99), st.sampled_from(["normal", "abnormal", "terminate"])), max_size=8),
)
def test_auto_shutdown_follows_the_model(strategy: str, mode: str, kids: list[Kid], steps: list[Any]) -> None:
    async def scenario() -> None:
        model = AutoShutdownModel(strategy, mode, [replace(k) for k in kids])  # drawn values stay as drawn
        specs = [A.worker(k.id, ends_by_message, restart=k.restart, significant=k.significant) for k in kids]
        async with A.Node(clock=FakeClock(), log_crashes=False) as node:
            sup = await A.start_supervisor(node, specs, strategy=strategy, intensity=10**6, auto_shutdown=mode)
            proc = node.process(sup)
            for index, how in steps:
                running = [k for k in model.kids if k.running]
                if not running:
                    break
                kid = running[index % len(running)]
                pid = (await A.which_child(node, sup, kid.id)).pid
                assert pid is not None
                model.act(kid, how)
                if how == "terminate":
                    await A.terminate_child(node, sup, kid.id)
                else:
                    node.send(pid, "stop" if how == "normal" else "crash")
                    await wait_until(lambda: not node.is_alive(pid), timeout=WAIT)  # noqa: B023
                if not model.alive:
                    await wait_until(lambda: not proc.alive, what="the auto-shutdown", timeout=WAIT)
                    assert proc.exit_reason == A.SHUTDOWN
                    assert node.process_count() == 0
                    return
                rows = await A.which_children(node, sup)  # answered after the exit was handled
                assert [(r.id, r.pid is not None) for r in rows] == [(k.id, k.running) for k in model.kids]
            assert node.is_alive(sup)

    run(scenario())
