"""``observer-agent run -- ...`` attaches to an unmodified program's loops:
``asyncio.run`` twice, and uvloop, in a real subprocess."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent import __main__ as launcher
from agent.client import AgentClient, AgentError
from tests.agent.aio_host import Picture
from tests.agent.conftest import OP_TOKEN

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parents[2]

APP = textwrap.dedent(
    """
    import asyncio, sys

    async def wait_line():
        return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    async def run(tag):
        async with asyncio.TaskGroup() as tg:
            tg.create_task(wait_line(), name=f"{tag}-worker")

    asyncio.run(run("first"))
    if sys.argv[1] == "uvloop":
        import uvloop
        uvloop.run(run("second"))
    else:
        asyncio.run(run("second"))
    print("app done", flush=True)
    """
)


async def wait_for_file(path: Path, proc: asyncio.subprocess.Process, timeout: float = 20.0) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await asyncio.to_thread(path.exists):
        if proc.returncode is not None:
            raise AssertionError(f"the program ended early: {await proc.communicate()}")
        if loop.time() > deadline:
            raise AssertionError(f"{path} never appeared")
        await asyncio.sleep(0.02)
    return await asyncio.to_thread(path.read_text)


@pytest.mark.parametrize("second_loop", ["asyncio", "uvloop"])
async def test_the_launcher_follows_an_unmodified_program_across_two_loops(tmp_path: Path, second_loop: str) -> None:
    pytest.importorskip("uvloop")
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "token").write_text(OP_TOKEN)
    addr_file = tmp_path / "address"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBSERVER_")}
    cmd = [sys.executable, "-m", "agent", "run", "--bind", "127.0.0.1:0", "--token-file", "token"]
    cmd += ["--address-file", str(addr_file), "--", sys.executable, "app.py", second_loop]
    pipe = asyncio.subprocess.PIPE
    proc = await asyncio.create_subprocess_exec(*cmd, cwd=tmp_path, env=env, stdin=pipe, stdout=pipe, stderr=pipe)
    try:
        host, port = (await wait_for_file(addr_file, proc)).rsplit(":", 1)
        client = await AgentClient.connect(host, int(port), token=OP_TOKEN)
        pic = await Picture(client).sync()
        assert client.hello["node"]["node_kind"] == "asyncio"
        first = await pic.until(lambda p: p.by_name("first-worker"), timeout=10, what="first-worker")
        scope = pic.procs[first["supervisor"]]
        main = pic.procs[scope["supervisor"]]
        root = pic.procs[main["supervisor"]]
        assert scope["kind"] == "taskgroup" and main["label"] == "run" and root["kind"] == "loop"
        assert first["created_at"].endswith("in run") and "app.py" in first["created_at"]
        assert proc.stdin is not None
        proc.stdin.write(b"next\n")
        await proc.stdin.drain()
        second = await pic.until(lambda p: p.by_name("second-worker"), timeout=10, what="second-worker")
        assert pic.exits(pid=root["pid"]), "the first loop's node ends"
        new_root = next(p for p in pic.procs.values() if p["kind"] == "loop")
        assert new_root["pid"] != root["pid"]
        if second_loop == "uvloop":
            assert new_root["label"].startswith("uvloop")
        up = second["supervisor"]
        while pic.procs[up]["kind"] != "loop":
            up = pic.procs[up]["supervisor"]
        assert up == new_root["pid"]
        proc.stdin.write(b"done\n")
        await proc.stdin.drain()
        out, err = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 0, err
        assert out.decode().strip() == "app done"
        assert b"observer-agent: not started" not in err
        await client.close()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()


def test_the_launcher_refuses_without_a_token_or_a_bind() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBSERVER_")}
    r = subprocess.run(
        [sys.executable, "-m", "agent", "run", "--", "true"], env=env, capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 2 and "OBSERVER_AGENT_BIND" in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "agent", "run", "--bind", "127.0.0.1:0", "--", "true"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2 and "OBSERVER_AGENT_TOKEN" in r.stderr


def test_the_launcher_environment_keeps_the_programs_pythonpath() -> None:
    env = launcher.build_env(
        {"PYTHONPATH": "/app/lib"}, bind="127.0.0.1:9", token_file=None, read_token_file=None, address_file=None
    )
    parts = env["PYTHONPATH"].split(os.pathsep)
    assert parts[0].endswith(os.path.join("agent", "_boot")) and parts[-1] == "/app/lib"
    assert env["OBSERVER_AGENT_BIND"] == "127.0.0.1:9"


async def connect_mixed(host: str, port: int, timeout: float = 30.0) -> AgentClient:
    """Attach until the agent says ``actors`` with tasks. The agent restarts as a
    mixed node as soon as it meets the node's processes (usually before anyone
    attaches); a session opened before that sees a plain asyncio node, and ends."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        try:
            c = await AgentClient.connect(host, port, token=OP_TOKEN)
        except (OSError, ConnectionError, asyncio.IncompleteReadError, AgentError):  # restarting meanwhile
            await asyncio.sleep(0.05)
            continue
        if c.hello["node"]["node_kind"] == "actors":
            return c
        try:
            await c.read_snapshot()
            async with asyncio.timeout(max(0.1, deadline - loop.time())):
                await c.closed.wait()  # the session ends: the agent restarts as a mixed node
        finally:
            await c.close()
    raise AssertionError("the agent never became a mixed node")


async def test_the_launcher_shows_an_actors_node_and_the_programs_tasks_in_one_picture(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(OP_TOKEN)
    addr_file = tmp_path / "address"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBSERVER_")}
    cmd = [sys.executable, "-m", "agent", "run", "--bind", "127.0.0.1:0", "--token-file", str(tmp_path / "token")]
    cmd += ["--address-file", str(addr_file), "--", sys.executable, "-m", "tests.browser.mixed_app"]
    pipe = asyncio.subprocess.PIPE
    proc = await asyncio.create_subprocess_exec(*cmd, cwd=ROOT, env=env, stdin=pipe, stdout=pipe, stderr=pipe)
    try:
        address = await wait_for_file(addr_file, proc)
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), 20)).strip() == b"ready"
        host, port = address.rsplit(":", 1)
        client = await connect_mixed(host, int(port))
        assert client.hello["node"]["include_tasks"] is True and "cancel" in client.welcome["commands"]
        assert addr_file.read_text() == address  # the same address: observers reconnect where they were
        pic = await Picture(client).sync()
        sup = await pic.until(lambda p: p.by_name("billing_sup"), what="the supervisor")
        assert sup["kind"] == "supervisor"
        kids = {p.get("child_id") for p in pic.procs.values() if p.get("supervisor") == sup["pid"]}
        assert {"ledger", "mailer"} <= kids
        poller = await pic.until(lambda p: p.by_name("poller-0"), what="the program's tasks")
        group = pic.procs[poller["supervisor"]]
        assert poller["kind"] == "task" and group["kind"] == "taskgroup"
        assert any(p["kind"] == "loop" for p in pic.procs.values())
        # the processes' own tasks are not drawn again as tasks
        assert not [p for p in pic.procs.values() if p["kind"] == "task" and p.get("label") == "keeper"]
        await client.close()
        assert proc.stdin is not None
        proc.stdin.close()
        _, err = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 0, err
        assert b"observer-agent: not started" not in err and b"observer-agent: stopped" not in err
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()
