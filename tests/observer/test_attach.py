"""Attachments end to end: a real node in a thread, a real agent on loopback, the real observer."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import actors
import agent
from agent import protocol as P
from agent.client import AgentError
from observer.attach import E_NOT_CONNECTED, AttachManager, Attachment, compress_changes
from observer.attach._manager import SWITCH_INTERVAL
from observer.model import Change, NodeModel
from observer.store import HistoryStore
from tests.observer import READ_TOKEN, TOKEN, wait_for


async def idle(proc: actors.Process) -> None:
    while True:
        await proc.receive()


async def linker(proc: actors.Process, target: actors.Pid) -> None:
    proc.link(target)
    while True:
        await proc.receive()


async def trapper(proc: actors.Process, target: actors.Pid) -> None:
    proc.trap_exit = True
    proc.link(target)
    while True:
        await proc.receive()


class Host:
    """A node in its own thread with an agent (as a real service would run them)."""

    def __init__(self, port: int = 0, node: actors.Node | None = None) -> None:
        self.node = node or actors.Node.start_in_thread(log_crashes=False)
        self.agent = agent.start(self.node, f"127.0.0.1:{port}", token=TOKEN, read_token=READ_TOKEN, sample_hz=20)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.agent.port}"

    def run(self, fn: Any) -> Any:
        return self.node.apply_threadsafe(fn)

    def run_async(self, coro: Any, timeout: float = 10.0) -> Any:
        return self.node.run_threadsafe(coro).result(timeout)

    def spawn(self, fn: Any, *args: Any, **kw: Any) -> str:
        return str(self.run(lambda: self.node.spawn(fn, *args, **kw)))

    def live(self) -> set[str]:
        return self.run(lambda: {str(p) for p in self.node.processes()})  # type: ignore[no-any-return]

    def supervisors(self) -> dict[str, str | None]:
        def read() -> dict[str, str | None]:
            out = {}
            for p in self.node.processes():
                s = self.node.info(p).supervisor
                out[str(p)] = str(s) if s else None
            return out

        return self.run(read)  # type: ignore[no-any-return]

    def exit(self, pid: str, reason: str = "kill") -> None:
        self.run(lambda: self.node.exit(actors.Pid.parse(pid), reason))

    def stop(self) -> None:
        self.agent.stop()
        self.node.stop_thread()


@pytest.fixture
def threads_checked() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    wait_for(
        lambda: not [t for t in threading.enumerate() if t not in before and t.is_alive()],
        timeout=10,
        what="every thread to end",
    )


@pytest.fixture
def host(threads_checked: None) -> Iterator[Host]:
    h = Host()
    yield h
    h.stop()


@pytest.fixture
def store(tmp_path: Path, threads_checked: None) -> Iterator[HistoryStore]:
    s = HistoryStore(str(tmp_path / "history.db"), checkpoint_events=50)
    yield s
    s.close()


@pytest.fixture
def manager(store: HistoryStore) -> Iterator[AttachManager]:
    m = AttachManager(store, backoff_initial=0.05, backoff_max=0.3, change_interval=0.05)
    yield m
    m.close()


def mirrored(att: Attachment, host: Host) -> bool:
    return att.status == "up" and att.model.pids() == host.live()


def sup_tree(host: Host, strategy: str = "one_for_one", intensity: int = 100) -> str:
    async def build() -> actors.Pid:
        return await actors.start_supervisor(
            host.node,
            [
                actors.worker("a", idle, label="A"),
                actors.worker("b", idle, label="B"),
                actors.supervisor_spec(
                    "pool", [actors.worker(f"w{i}", idle, label="PoolWorker") for i in range(5)], intensity=100
                ),
                actors.worker("c", idle, label="C"),
            ],
            strategy=strategy,
            intensity=intensity,
            period=60,
            name="top",
        )

    return str(host.run_async(build()))


def child(att: Attachment, sup: str, child_id: str) -> str:
    d = att.model.process(sup)
    assert d is not None
    for pid in d["children"]:
        c = att.model.process(pid)
        if c is not None and c["child_id"] in (child_id, repr(child_id)):
            return pid
    raise AssertionError(f"no child {child_id} under {sup}")


# -- mirroring ------------------------------------------------------------------------------------------


def test_model_mirrors_the_node_after_attach_and_after_churn(
    host: Host, manager: AttachManager, store: HistoryStore
) -> None:
    top = sup_tree(host)
    loners = [host.spawn(idle) for _ in range(10)]
    att = manager.add(host.address, TOKEN, "operator", name="n1")
    wait_for(lambda: mirrored(att, host), what="the first snapshot")
    assert att.model.path_to_root(child(att, top, "a"))[0] == top
    pool = child(att, top, "pool")
    assert len(att.model.process(pool)["children"]) == 5  # type: ignore[index]

    # churn: spawns, kills, supervisor restarts
    extra = [host.spawn(idle) for _ in range(50)]
    for pid in extra[:20] + loners[:5]:
        host.exit(pid)
    old_a = child(att, top, "a")
    host.exit(old_a, "boom")
    old_w = child(att, pool, "w3")
    host.exit(old_w, "boom")
    wait_for(
        lambda: mirrored(att, host) and old_a not in att.model and old_w not in att.model,
        what="the model to follow the churn",
    )
    wait_for(lambda: att.model.pids() == host.live(), what="restarted children")
    sups = host.supervisors()
    for pid in att.model.pids():
        assert att.model.process(pid)["supervisor"] == sups[pid]  # type: ignore[index]
    new_a = child(att, top, "a")
    hist = att.model.process(new_a)["restart_history"]  # type: ignore[index]
    assert [(h["old_pid"], h["new_pid"]) for h in hist] == [(old_a, new_a)]
    assert att.model.process(top)["children"][0] == new_a  # type: ignore[index]  # spec order kept
    # the samples flow in: node series and counters
    wait_for(lambda: att.model.series()["process_count"], what="node samples")
    assert att.model.summary()["process_count"] == len(host.live())

    # the history store saw the same stream: time travel to now gives the same processes
    assert store.flush()
    now = store.tree_at("n1", time.time() + 1)
    assert now is not None and {r["pid"] for r in now["procs"]} == host.live()
    assert {e["kind"] for e in store.events(node="n1", limit=1000)} >= {
        "snapshot",
        "spawn",
        "exit",
        "restart",
        "status",
    }
    assert store.tree_at("n1", time.time() + 1) is not None


def test_node_shown_down_then_reattached_to_a_new_agent_on_the_same_port(
    manager: AttachManager, threads_checked: None
) -> None:
    h1 = Host()
    port = h1.agent.port
    try:
        sup_tree(h1)
        att = manager.add(f"127.0.0.1:{port}", TOKEN, "operator", name="svc")
        wait_for(lambda: mirrored(att, h1), what="attach")
        before = att.model.pids()
        h1.agent.stop()
        wait_for(lambda: att.status == "down", what="the node to be shown down")
        assert att.model.pids() == before  # the last-known tree is kept...
        tree = att.model.tree()
        assert tree["stale"] is True and tree["children"]  # ...greyed
        assert att.model.summary()["status"] == "down"
        with pytest.raises(AgentError) as err:
            att.command("ping", timeout=2)
        assert err.value.code == E_NOT_CONNECTED
    finally:
        h1.stop()
    h2 = Host(port=port)  # a new node and agent on the same port
    try:
        pids = [h2.spawn(idle, name=f"fresh{i}") for i in range(3)]
        wait_for(lambda: mirrored(att, h2), what="re-attach and resync")
        assert set(pids) <= att.model.pids()
        assert not (before & att.model.pids()) or att.model.pids() == h2.live()
        assert att.model.tree()["stale"] is False
        assert att.command("ping", timeout=5)["pong"] is True
        assert att.connects == 2
    finally:
        h2.stop()


def test_resync_on_request_keeps_the_mirror(host: Host, manager: AttachManager) -> None:
    sup_tree(host)
    att = manager.add(host.address, READ_TOKEN, "read")
    wait_for(lambda: mirrored(att, host), what="attach")
    n = att.model.summary()["snapshots"]
    assert att.command("snapshot") == {"resync": True}
    wait_for(lambda: att.model.summary()["snapshots"] > n and mirrored(att, host), what="the new snapshot")


# -- commands, audit, change batches ------------------------------------------------------------------------


def test_commands_from_another_thread_are_audited(host: Host, manager: AttachManager, store: HistoryStore) -> None:
    victim = host.spawn(idle, name="victim")
    att = manager.add(host.address, TOKEN, "operator", name="ops")
    wait_for(lambda: mirrored(att, host), what="attach")
    res: dict[str, Any] = {}

    def web_handler() -> None:  # as a Flask thread would
        res["kill"] = att.run_audited("kill", who="ada", from_addr="10.1.2.3", pid=victim, reason="kill")
        try:
            att.run_audited("kill", who="ada", from_addr="10.1.2.3", pid="<0.999999.0>")
        except AgentError as exc:
            res["error"] = exc.code

    t = threading.Thread(target=web_handler)
    t.start()
    t.join(20)
    assert res == {"kill": {"pid": victim, "reason": "kill"}, "error": P.E_NO_SUCH_PROCESS}
    wait_for(lambda: victim not in att.model, what="the kill to show")
    assert store.flush()
    rows = store.audits(node="ops")
    assert [(r["action"], r["target"], r["ok"]) for r in rows] == [("kill", "<0.999999.0>", 0), ("kill", victim, 1)]
    assert rows[1]["who"] == "ada" and rows[1]["from_addr"] == "10.1.2.3" and rows[1]["result"]["pid"] == victim
    # a read-only attachment is refused by the agent
    ro = manager.add(host.address, READ_TOKEN, "read", name="ro")
    wait_for(lambda: ro.status == "up", what="read-only attach")
    with pytest.raises(AgentError) as err:
        ro.command("kill", pid=host.spawn(idle))
    assert err.value.code == P.E_NOT_PERMITTED
    info = ro.info()
    assert info["role"] == "read" and "kill" not in info["commands"] and "token" not in str(info)


def test_changes_are_pushed_in_batches(host: Host, manager: AttachManager) -> None:
    batches: list[tuple[str, list[Change]]] = []
    lock = threading.Lock()

    def listener(name: str, changes: list[Change]) -> None:
        assert threading.current_thread().name == "observer-attach"
        with lock:
            batches.append((name, changes))

    manager.on_change(listener)
    att = manager.add(host.address, READ_TOKEN, "read", name="batched")
    wait_for(lambda: mirrored(att, host), what="attach")
    with lock:
        batches.clear()

    async def burst() -> list[actors.Pid]:
        return [host.node.spawn(idle) for _ in range(500)]

    pids = {str(p) for p in host.run_async(burst())}
    wait_for(lambda: pids <= att.model.pids(), what="500 spawns")

    def spawned() -> set[str]:
        with lock:
            return {c.pid for _, cs in batches for c in cs if c.kind == "spawn" and c.pid}

    wait_for(lambda: pids <= spawned(), what="their changes")
    with lock:
        assert 1 <= len(batches) < 50  # a few pushes, not one per event
        assert {n for n, _ in batches} == {"batched"}


def test_compress_changes() -> None:
    cs = [
        Change("spawn", "a"),
        Change("samples", None, {"rows": 2}),
        Change("status", None, {"status": "up"}),
        Change("reset", None, {"count": 1}),
        Change("samples", None, {"rows": 3}),
        Change("exit", "b"),
    ]
    assert compress_changes(cs) == [
        Change("status", None, {"status": "up"}),
        Change("reset", None, {"count": 1}),
        Change("exit", "b"),
        Change("samples", None, {"rows": 3}),
    ]


def test_manager_add_get_list_remove(host: Host, manager: AttachManager) -> None:
    att = manager.add(host.address, READ_TOKEN, "read", name="x")
    assert manager.get("x") is att and manager.list() == [att]
    with pytest.raises(ValueError):
        manager.add(host.address, READ_TOKEN, "read", name="x")
    with pytest.raises(ValueError):
        manager.add(host.address, TOKEN, "admin", name="y")
    wait_for(lambda: att.status == "up", what="attach")
    assert manager.remove("x") is True and manager.get("x") is None and manager.remove("x") is False
    wait_for(lambda: not host.agent.sessions, what="the session to close")


def test_a_failed_reconnect_of_a_node_shown_up_records_it_down(manager: AttachManager, store: HistoryStore) -> None:
    """A node whose model says up (restored as last seen) and whose agent is gone: the
    first failed attempt marks it down in the model and in the history alike (the
    history's claim on the node is given up with it)."""
    model = NodeModel("gone")
    model.apply({"t": "status", "status": "up", "node": {"pid": 1}})
    assert model.status == "syncing"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens there once closed
    att = manager.add(f"127.0.0.1:{port}", TOKEN, "operator", name="gone", model=model)
    wait_for(lambda: att.status == "down", what="the node shown down")
    rows = wait_for(lambda: store.events(node="gone", kinds=["status"]), what="the down status recorded")
    assert [r["status"] for r in rows] == ["down"] and "ConnectionRefusedError" in rows[0]["reason"]
    wait_for(lambda: att.attempts >= 3, what="more attempts")
    assert len(store.events(node="gone", kinds=["status"])) == 1  # recorded once, on the way down


def test_wrong_token_keeps_retrying_with_a_clear_error(host: Host, manager: AttachManager) -> None:
    att = manager.add(host.address, "not-the-token", "operator", name="bad")
    wait_for(lambda: att.attempts >= 3, what="retries")
    assert att.status == "connecting" and (att.last_error or "").startswith(P.E_AUTH_FAILED)


# -- kill preview against what really happens -----------------------------------------------------------------


def _gone(host: Host, pids: set[str]) -> bool:
    return not (pids & host.live())


@pytest.mark.parametrize("strategy", ["one_for_all", "rest_for_one", "one_for_one"])
def test_kill_preview_matches_what_the_runtime_does(host: Host, manager: AttachManager, strategy: str) -> None:
    top = sup_tree(host, strategy)
    att = manager.add(host.address, TOKEN, "operator", name="kp")
    wait_for(lambda: mirrored(att, host), what="attach")
    b = child(att, top, "b")
    friend = host.spawn(linker, actors.Pid.parse(b))  # dies with b
    guard = host.spawn(trapper, actors.Pid.parse(b))  # traps: survives
    wait_for(lambda: mirrored(att, host) and friend in att.model.process(b)["links"], what="the links")  # type: ignore[index]
    preview = att.kill_preview(b)  # refreshes the trap_exit flags the stream does not carry
    pool = child(att, top, "pool")
    expect_down = {
        "one_for_all": {b, friend, child(att, top, "a"), pool, child(att, top, "c")},
        "rest_for_one": {b, friend, pool, child(att, top, "c")},
        "one_for_one": {b, friend},
    }[strategy]
    assert set(preview["down"]) - set(preview["down"]) == set()
    assert {p for p in preview["down"] if att.model.process(p)["supervisor"] != pool} == expect_down  # type: ignore[index]
    assert preview["notified"] == [guard] and preview["linked_down"] == [friend]
    assert preview["escalation"] == []
    expected_gone = set(preview["down"])
    survivors = att.model.pids() - expected_gone
    att.run_audited("kill", who="test", from_addr=None, pid=b)
    wait_for(lambda: _gone(host, expected_gone), what="the previewed processes to go down")
    assert survivors <= host.live()  # nobody else went down
    host.exit(guard, "kill")  # it traps exits: would make the node's shutdown wait


def test_kill_preview_escalation_matches_the_runtime(host: Host, manager: AttachManager) -> None:
    async def build() -> actors.Pid:
        return await actors.start_supervisor(
            host.node,
            [
                actors.supervisor_spec("mid", [actors.worker("x", idle), actors.worker("y", idle)], intensity=0),
                actors.worker("z", idle),
            ],
            intensity=10,
            period=60,
        )

    top = str(host.run_async(build()))
    att = manager.add(host.address, TOKEN, "operator", name="esc")
    wait_for(lambda: mirrored(att, host), what="attach")
    mid = child(att, top, "mid")
    x, y, z = child(att, mid, "x"), child(att, mid, "y"), child(att, top, "z")
    preview = att.kill_preview(x)
    assert preview["escalation"] == [mid] and set(preview["down"]) == {x, y, mid}
    assert [(r["supervisor"], r["restarted"]) for r in preview["restarts"]] == [(top, [mid])]
    att.command("kill", pid=x)
    wait_for(lambda: _gone(host, {x, y, mid}), what="the escalation")
    assert {top, z} <= host.live()
    wait_for(
        lambda: mirrored(att, host) and len(att.model.process(child(att, top, "mid"))["children"]) == 2,  # type: ignore[index]
        what="mid restarted",
    )


def test_the_manager_lowers_the_gil_switch_interval(manager: AttachManager) -> None:
    # the attach loop's short steps each wait for the GIL: at most this long (see observer/attach/_manager.py)
    assert sys.getswitchinterval() <= SWITCH_INTERVAL < 0.005
