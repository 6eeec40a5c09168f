"""uvloop as a loop choice: a small tree runs on it as it does on asyncio's own loop."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import actors as A
from tests.conftest import wait_until

uvloop = pytest.importorskip("uvloop")


class Account(A.GenServer):
    async def handle_call(self, request: Any, from_: A.From, state: Any) -> Any:
        match request:
            case ("deposit", n):
                return A.Reply(state + n, state + n)
            case "crash":
                raise RuntimeError("crash on purpose")
        return A.Reply(state, state)

    async def handle_info(self, msg: Any, state: Any) -> Any:
        return A.NoReply(state, then=A.Continue(msg))

    async def handle_continue(self, term: Any, state: Any) -> Any:
        return state + term


async def _tree() -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    out: dict[str, Any] = {"loop": type(loop).__module__}
    async with A.Node(log_crashes=False) as node:
        sup = await A.start_supervisor(
            node,
            [Account.child_spec(10, id="a", name="a"), Account.child_spec(0, id="b", name="b")],
            strategy="one_for_one",
        )
        assert await node.call("a", ("deposit", 5)) == 15
        node.send("b", 7)
        assert await node.call("b", "get") == 7
        old = node.whereis("a")
        with pytest.raises(A.ServerDied):
            await node.call("a", "crash")
        await wait_until(lambda: node.whereis("a") not in (None, old), what="a restarted")
        out["after_restart"] = await node.call("a", "get")
        got: list[Any] = []

        async def client(proc: A.Process) -> None:
            reqs = A.RequestIds()
            reqs.add(A.send_request(proc, "a", ("deposit", 1)), "a")
            reqs.add(A.send_request(proc, "b", ("deposit", 2)), "b")
            while (resp := await reqs.wait_response(proc, timeout=2)) is not None:
                got.append((resp.label, resp.result()))

        node.spawn(client)
        await wait_until(lambda: len(got) == 2)
        out["responses"] = sorted(got)
        out["children"] = len(await A.which_children(node, sup))
    return out


def test_a_small_tree_runs_on_uvloop() -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        out = runner.run(_tree())
    assert out["loop"].startswith("uvloop")
    assert out["after_restart"] == 10  # restarted from its child spec's start arguments
    assert out["responses"] == [("a", 11), ("b", 9)]
    assert out["children"] == 2
