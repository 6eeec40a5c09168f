"""FastAPI on uvicorn, for real: an unmodified app started by the launcher
(``python -m agent run -- python -m uvicorn tests.browser.fastapi_app:app``) in a subprocess,
under real HTTP load on loopback, on uvicorn's asyncio loop and on uvloop
(which ``--loop auto`` picks when installed). An observer (``AgentClient``)
sees request-handling tasks appear and finish, and a failing handler's
exception arrives as a crash report."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
aiohttp = pytest.importorskip("aiohttp")

from agent.client import AgentClient  # noqa: E402
from tests.agent.aio_host import Picture  # noqa: E402
from tests.agent.conftest import OP_TOKEN  # noqa: E402
from tests.agent.test_asyncio_launcher import ROOT, wait_for_file  # noqa: E402

pytestmark = pytest.mark.timeout(90)

LISTENING = re.compile(rb"Uvicorn running on http://127\.0\.0\.1:(\d+)")


class Uvicorn:
    """The launcher running uvicorn on the test app, with its agent's address."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.port = 0
        self.log = bytearray()
        self._listening = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        # drain stderr for the whole run (a full pipe would block the server)
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.log += line
            m = LISTENING.search(line)
            if m:
                self.port = int(m.group(1))
                self._listening.set()

    async def listening(self, timeout: float = 30.0) -> int:
        waiter = asyncio.ensure_future(self._listening.wait())
        await asyncio.wait({waiter, self._reader}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if not self._listening.is_set():
            waiter.cancel()
            raise AssertionError(f"uvicorn never listened: {self.log.decode(errors='replace')}")
        return self.port

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await asyncio.wait_for(self._reader, 10)


async def launch(tmp_path: Path, loop: str) -> tuple[Uvicorn, AgentClient]:
    (tmp_path / "token").write_text(OP_TOKEN)
    addr_file = tmp_path / "address"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBSERVER_")}
    cmd = [sys.executable, "-m", "agent", "run", "--bind", "127.0.0.1:0", "--token-file", str(tmp_path / "token")]
    cmd += ["--address-file", str(addr_file), "--"]
    cmd += [sys.executable, "-m", "uvicorn", "tests.browser.fastapi_app:app", "--host", "127.0.0.1", "--port", "0"]
    cmd += ["--loop", loop, "--no-access-log"]
    proc = await asyncio.create_subprocess_exec(*cmd, cwd=ROOT, env=env, stderr=asyncio.subprocess.PIPE)
    server = Uvicorn(proc)
    try:
        await server.listening()
        host, port = (await wait_for_file(addr_file, proc)).rsplit(":", 1)
        client = await AgentClient.connect(host, int(port), token=OP_TOKEN)
    except BaseException:
        await server.stop()
        raise
    return server, client


def request_task(p: Picture) -> dict[str, object] | None:
    return next((x for x in p.procs.values() if x.get("label") == "RequestResponseCycle.run_asgi"), None)


@pytest.mark.parametrize("loop", ["asyncio", "auto"])
async def test_fastapi_on_uvicorn_under_the_launcher(tmp_path: Path, loop: str) -> None:
    if loop == "auto":
        pytest.importorskip("uvloop")
    server, client = await launch(tmp_path, loop)
    try:
        hello = client.hello["node"]
        assert hello["node_kind"] == "asyncio"
        assert hello["loop"].startswith("uvloop" if loop == "auto" else "asyncio"), hello["loop"]
        pic = await Picture(client).sync()
        base = f"http://127.0.0.1:{server.port}"
        async with aiohttp.ClientSession() as http:
            # a request held open: its task appears, is inspected, and finishes
            slow = asyncio.ensure_future(http.get(f"{base}/slow"))
            req = await pic.until(request_task, timeout=15, what="the request's task")
            root = req
            while root.get("supervisor") in pic.procs:
                root = pic.procs[root["supervisor"]]
            assert root["kind"] == "loop"
            info = await client.command("inspect", pid=req["pid"])
            assert info["waits_on"]["kind"] == "event"
            assert any(f["function"].endswith("slow") for f in info["stack"]), info["stack"]
            assert (await http.get(f"{base}/release")).status == 200
            resp = await slow
            assert resp.status == 200 and await resp.json() == {"slow": "done"}
            await pic.until(lambda p: p.exits(pid=req["pid"]), timeout=10, what="the request task's exit")
            assert pic.exits(pid=req["pid"])[0]["state"] == "done"

            # real load: 300 requests, 50 at a time; all served, all counted
            await pic.until(lambda p: p.stats, timeout=10, what="the first samples")
            before = int(pic.stats.get("tasks_finished_total") or 0)
            gate = asyncio.Semaphore(50)

            async def get() -> int:
                async with gate, http.get(f"{base}/ok") as r:
                    await r.read()
                    return r.status

            assert await asyncio.gather(*(get() for _ in range(300))) == [200] * 300
            await pic.until(
                lambda p: int(p.stats.get("tasks_finished_total") or 0) >= before + 300,
                timeout=20,
                what="300 request tasks counted as finished",
            )
            assert pic.stats["hook_errors"] == 0 and pic.stats["factory_replaced"] is False

            # a failing handler: uvicorn logs "Exception in ASGI application" -> a crash report
            resp = await http.get(f"{base}/fail")
            assert resp.status == 500
            crash = await pic.until(lambda p: p.exits(exception="ValueError"), timeout=10, what="the handler's crash")
            rep = crash[0]["report"]
            assert rep["kind"] == "logged" and rep["message_text"].startswith("uvicorn.error"), rep["message_text"]
            assert "sk_live_fastapi" not in rep["traceback"]
            assert any(f["function"] == "fail" and f["own"] for f in rep["exceptions"][0]["frames"])
            assert rep["task"] is not None and rep["supervisor"] == rep["task"]
        await client.close()
    finally:
        await server.stop()
    assert b"observer-agent: not started" not in server.log
