"""Connection floods against the served observer and its agent.

    python -m bench flood [--mode threading|gevent] [--ws 500] [--agent-conns 500]
                          [--slow 400] [--browsers 200] [--kills 20] [--seconds 8]

Starts the demo system (``python -m observer.demo``, its agent on loopback)
and ``observer serve --attach`` on it (gunicorn, the ``--mode`` worker: the
server users deploy), then, from this process (all on one asyncio loop):

1. holds ``--ws`` unauthenticated WebSocket upgrades to ``/socket.io/`` (each
   refused one is opened again at once) and ``--agent-conns`` half-open agent
   handshakes (connect, read ``hello``, never answer; re-opened when the agent
   drops them);
2. meanwhile a logged-in client fetches a page and an API route in turn:
   ``ui_p99_ms_under_flood``;
3. and a legitimate observer attaches to the agent (handshake and full
   snapshot): ``attach_under_agent_flood_s`` (the worst of 5);
4. the flood stopped, ``--slow`` slow requests (slowloris: half a request
   head, then a byte every second; re-opened when the server closes them)
   are held while the logged-in client probes again:
   ``ui_p99_ms_under_slow_flood``;
5. that flood stopped too, ``--browsers`` logged-in Socket.IO clients (one login
   session each, WebSocket transport) subscribe to the node: ``live_browsers``
   is how many received a ``batch`` within 30 s;
6. with them all connected, ``--kills`` chat sessions are killed through the
   API; ``crash_to_browser_p99_ms_at_max_browsers`` is the p99 over every
   (kill, browser) of the time from the kill's POST to the ``batch`` naming
   the exit.

Raises the open-files limit to its hard limit (the floods need ~2,000
descriptors on each side). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import resource
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import requests
import socketio

from agent.client import AgentClient, AgentError
from bench._util import emit, machine, percentile, progress, rnd, stop_process

URL_RE = re.compile(r"(http://127\.0\.0\.1:\d+)/login\?token=(\S+)")
AGENT_RE = re.compile(r"agent (127\.0\.0\.1):(\d+)")


def _raise_nofile() -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _line(proc: subprocess.Popen[str], pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"process ended before printing {pattern.pattern}")
        m = pattern.search(line)
        if m:
            return m
    raise RuntimeError(f"no {pattern.pattern} within {timeout}s")


class Servers:
    """The demo system and ``observer serve`` attached to it."""

    def __init__(self, mode: str) -> None:
        self.token = secrets.token_urlsafe(32)
        self.tmp = tempfile.TemporaryDirectory(prefix="bench-flood-")
        env = {k: v for k, v in os.environ.items() if not k.startswith("OBSERVER_")}
        env.update({"OBSERVER_AGENT_TOKEN": self.token, "OBSERVER_DEMO_SEED": "1"})
        self.demo = subprocess.Popen(
            [sys.executable, "-m", "observer.demo"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        m = _line(self.demo, AGENT_RE, 60)
        self.agent_host, self.agent_port = m.group(1), int(m.group(2))
        tok = os.path.join(self.tmp.name, "node-token")
        with open(os.open(tok, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(self.token)
        argv = [sys.executable, "-m", "observer", "serve", "--port", "0", "--no-browser", "--async-mode", mode]
        argv += ["--attach", f"demo={self.agent_host}:{self.agent_port}", "--node-token-file", tok]
        argv += ["--allow-destructive-actions"]
        self.server = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
        m = _line(self.server, URL_RE, 60)
        self.base, self.login_token = m.group(1), m.group(2)
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.server.stdout is not None
        for _ in self.server.stdout:
            pass

    def stop(self) -> None:
        stop_process(self.server)
        stop_process(self.demo)
        self.tmp.cleanup()


def login(base: str, token: str) -> tuple[requests.Session, str]:
    http = requests.Session()
    r = http.post(f"{base}/login", data={"token": token}, allow_redirects=False, timeout=30)
    r.raise_for_status()
    html = http.get(f"{base}/", timeout=30).text
    m = re.search(r'"csrf":\s*"([^"]+)"', html)
    return http, m.group(1) if m else ""


# -- the floods ------------------------------------------------------------------------------------


async def hold_ws(base: str, stop: asyncio.Event, counts: dict[str, int]) -> None:
    """One attacker slot: an unauthenticated WebSocket upgrade, re-opened when refused."""
    host_port = base.split("//", 1)[1]
    host, port = host_port.rsplit(":", 1)
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    req = (
        f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(host, int(port))
        except OSError:
            await asyncio.sleep(0.05)
            continue
        try:
            writer.write(req)
            status = await reader.readline()
            counts["accepted" if b" 101 " in status else "refused"] += 1
            if b" 101 " in status:
                await stop.wait()  # held open
            else:
                await reader.read()  # the server closes it
        except (OSError, asyncio.IncompleteReadError):
            counts["reset"] += 1
        finally:
            writer.close()
        await asyncio.sleep(0.01)


async def hold_handshake(host: str, port: int, stop: asyncio.Event, counts: dict[str, int]) -> None:
    """One attacker slot: connect to the agent, never answer its hello; re-open when dropped."""
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        counts["opened"] += 1
        try:
            # hold until the agent drops us (or the flood stops)
            read = asyncio.ensure_future(reader.read())
            done, _ = await asyncio.wait({read, asyncio.ensure_future(stop.wait())}, return_when="FIRST_COMPLETED")
            if read in done:
                counts["dropped"] += 1
            read.cancel()
        except OSError:
            counts["dropped"] += 1
        finally:
            writer.close()
        await asyncio.sleep(0.01)


async def hold_slow(base: str, stop: asyncio.Event, counts: dict[str, int]) -> None:
    """One attacker slot: half a request head, then one more byte every second; re-opened when closed."""
    host_port = base.split("//", 1)[1]
    host, port = host_port.rsplit(":", 1)
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(host, int(port))
        except OSError:
            await asyncio.sleep(0.05)
            continue
        counts["opened"] += 1
        try:
            writer.write(f"GET /api/overview HTTP/1.1\r\nHost: {host_port}\r\nX-Slow: ".encode())
            closed = asyncio.ensure_future(reader.read())
            while not stop.is_set() and not closed.done():
                await asyncio.wait({closed}, timeout=1.0)
                writer.write(b"a")
            if closed.done():
                counts["closed"] += 1
            closed.cancel()
        except OSError:
            counts["closed"] += 1
        finally:
            writer.close()


async def slow_phase(srv: Servers, args: argparse.Namespace, out: dict[str, Any]) -> None:
    stop = asyncio.Event()
    counts = {"opened": 0, "closed": 0}
    tasks = [asyncio.create_task(hold_slow(srv.base, stop, counts)) for _ in range(args.slow)]
    await asyncio.sleep(2.0)  # let the flood build up
    progress(f"slow flood up: {counts}")
    http, _csrf = login(srv.base, srv.login_token)
    lat = await asyncio.get_running_loop().run_in_executor(None, ui_probe, srv.base, http, args.seconds)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    progress(f"slow flood done: {counts}, ui requests {len(lat)}")
    out["ui_p99_ms_under_slow_flood"] = rnd(percentile(lat, 99))
    out["ui_requests_under_slow_flood"] = len(lat)
    out["slow_requests_opened"] = counts["opened"]


def ui_probe(base: str, http: requests.Session, seconds: float) -> list[float]:
    """A logged-in client's page + API latencies (ms), one after the other."""
    lat: list[float] = []
    deadline = time.monotonic() + seconds
    urls = [f"{base}/", f"{base}/api/overview", f"{base}/nodes/demo/tree", f"{base}/api/nodes/demo/stats"]
    i = 0
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        try:
            r = http.get(urls[i % len(urls)], timeout=30)
            ok = r.status_code < 500
        except requests.RequestException:
            ok = False
        lat.append((time.perf_counter() - t0) * 1000 if ok else 30_000.0)
        i += 1
    return lat


async def attach_once(host: str, port: int, token: str) -> float:
    """Seconds until a legitimate observer is attached and has its snapshot
    (retrying at once if a flood evicted its handshake, as the observer does)."""
    t0 = time.perf_counter()
    while True:
        try:
            client = await AgentClient.connect(host, port, token=token, timeout=5)
            break
        except (AgentError, OSError, TimeoutError):
            if time.perf_counter() - t0 > 30:
                raise
    try:
        await client.read_snapshot(timeout=30)
    finally:
        await client.close()
    return time.perf_counter() - t0


async def flood_phase(srv: Servers, args: argparse.Namespace, out: dict[str, Any]) -> None:
    stop = asyncio.Event()
    ws_counts = {"accepted": 0, "refused": 0, "reset": 0}
    ag_counts = {"opened": 0, "dropped": 0}
    tasks = [asyncio.create_task(hold_ws(srv.base, stop, ws_counts)) for _ in range(args.ws)]
    tasks += [
        asyncio.create_task(hold_handshake(srv.agent_host, srv.agent_port, stop, ag_counts))
        for _ in range(args.agent_conns)
    ]
    await asyncio.sleep(2.0)  # let the flood build up
    progress(f"flood up: ws {ws_counts}, agent {ag_counts}")
    http, _csrf = login(srv.base, srv.login_token)
    probe = asyncio.get_running_loop().run_in_executor(None, ui_probe, srv.base, http, args.seconds)
    attach: list[float] = []
    for _ in range(5):
        try:
            attach.append(await attach_once(srv.agent_host, srv.agent_port, srv.token))
        except Exception as exc:
            progress(f"attach failed under flood: {exc}")
            attach.append(30.0)
    progress(f"attach times under the flood: {[round(a, 3) for a in attach]}")
    lat = await probe
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    progress(f"flood done: ws {ws_counts}, agent {ag_counts}, ui requests {len(lat)}")
    out["ui_p99_ms_under_flood"] = rnd(percentile(lat, 99))
    out["ui_median_ms_under_flood"] = rnd(percentile(lat, 50))
    out["ui_requests_under_flood"] = len(lat)
    out["attach_under_agent_flood_s"] = rnd(max(attach))
    out["flood_ws_accepted"] = ws_counts["accepted"]
    out["flood_ws_refused"] = ws_counts["refused"]
    out["flood_agent_handshakes_opened"] = ag_counts["opened"]


# -- the live browsers -----------------------------------------------------------------------------


class Browser:
    """A logged-in live client: its own session, WebSocket transport, subscribed to the node."""

    def __init__(self, base: str, token: str, news: asyncio.Event) -> None:
        self.news = news
        self.base = base
        self.http, _ = login(base, token)
        self.sio = socketio.AsyncClient(reconnection=False)
        self.got_batch = asyncio.Event()
        self.exits: dict[str, float] = {}
        self.sio.on("batch", self._on_batch, namespace="/live")

    async def _on_batch(self, msg: dict[str, Any]) -> None:
        now = time.perf_counter()
        for ch in msg.get("changes") or ():
            if ch.get("kind") == "exit" and ch.get("pid") not in self.exits:
                self.exits[ch["pid"]] = now
                self.news.set()
        self.got_batch.set()

    async def start(self) -> None:
        cookie = "; ".join(f"{k}={v}" for k, v in self.http.cookies.items())
        await self.sio.connect(
            self.base, headers={"Cookie": cookie}, namespaces=["/live"], transports=["websocket"], wait_timeout=30
        )
        await self.sio.emit("subscribe", {"node": "demo", "view": "overview"}, namespace="/live")


async def browsers_phase(srv: Servers, args: argparse.Namespace, out: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    browsers: list[Browser] = []
    news = asyncio.Event()
    for i in range(args.browsers):
        b = await loop.run_in_executor(None, Browser, srv.base, srv.login_token, news)
        try:
            await b.start()
        except Exception as exc:
            progress(f"browser {i} could not connect: {exc}")
            break
        browsers.append(b)
    progress(f"{len(browsers)} browsers connected")
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(b.got_batch.wait() for b in browsers)), 30)
    live = [b for b in browsers if b.got_batch.is_set()]
    out["live_browsers"] = len(live)
    http, csrf = login(srv.base, srv.login_token)
    rng = random.Random(1)
    lat: list[float] = []

    def kill_one() -> tuple[str, float] | None:
        found = http.get(f"{srv.base}/api/nodes/demo/search", params={"q": "sessions_sup"}, timeout=30).json()
        sup = next((h["pid"] for h in found.get("matches", []) if h["name"] == "sessions_sup"), None)
        rows = http.get(
            f"{srv.base}/api/nodes/demo/processes", params={"supervisor": sup, "limit": 500}, timeout=30
        ).json()["rows"]
        if not rows:
            return None
        pid = str(rng.choice(rows)["pid"])
        t0 = time.perf_counter()
        r = http.post(
            f"{srv.base}/api/nodes/demo/processes/{pid}/kill",
            json={"reason": "shutdown"},
            headers={"X-CSRF-Token": csrf},
            timeout=30,
        )
        return (pid, t0) if r.status_code == 200 else None

    for _ in range(args.kills):
        killed = await loop.run_in_executor(None, kill_one)
        if killed is None:
            continue
        pid, t0 = killed
        deadline = time.perf_counter() + 10
        while time.perf_counter() < deadline and not all(pid in b.exits for b in live):
            news.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(news.wait(), max(0.0, deadline - time.perf_counter()))
        lat += [((b.exits.get(pid) or time.perf_counter()) - t0) * 1000 for b in live]
        await asyncio.sleep(rng.uniform(0.05, 0.3))
    if lat:
        out["crash_to_browser_p99_ms_at_max_browsers"] = rnd(percentile(lat, 99))
        out["crash_to_browser_median_ms_at_max_browsers"] = rnd(percentile(lat, 50))
    for b in browsers:
        with contextlib.suppress(Exception):
            await b.sio.disconnect()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"bench": "flood", "mode": args.mode, "nofile": _raise_nofile(), "machine": machine()}
    srv = Servers(args.mode)
    try:
        progress(f"observer at {srv.base} ({args.mode}), agent at {srv.agent_host}:{srv.agent_port}")
        await flood_phase(srv, args, out)
        if args.slow:
            await slow_phase(srv, args, out)
        await browsers_phase(srv, args, out)
    finally:
        srv.stop()
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench flood")
    ap.add_argument("--mode", default="threading", choices=("threading", "gevent"))
    ap.add_argument("--ws", type=int, default=500, help="unauthenticated WebSockets held")
    ap.add_argument("--agent-conns", type=int, default=500, help="half-open agent handshakes held")
    ap.add_argument("--slow", type=int, default=400, help="slow requests (slowloris) held")
    ap.add_argument("--browsers", type=int, default=200, help="logged-in live browsers")
    ap.add_argument("--kills", type=int, default=20, help="crashes timed to every browser")
    ap.add_argument("--seconds", type=float, default=8.0, help="how long the UI is probed under the flood")
    args = ap.parse_args(argv)
    out = asyncio.run(run(args))
    emit(out)
    return 0
