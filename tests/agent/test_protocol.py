"""The wire protocol: framing, MACs, fuzzed decoding, TLS."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import actors
import agent
from agent import _framing
from agent import protocol as P
from agent.client import AgentClient, AgentError
from tests.conftest import wait_until


def test_frames_round_trip_through_the_incremental_decoder() -> None:
    msgs = [{"t": "ev", "seq": i, "x": "é" * i} for i in range(5)]
    data = b"".join(P.encode_frame(m) for m in msgs)
    dec = P.FrameDecoder()
    out = []
    for i in range(0, len(data), 7):  # arbitrary split points
        out += dec.feed(data[i : i + 7])
    assert out == msgs


def test_non_finite_numbers_are_sent_as_text() -> None:
    frame = P.encode_frame({"t": "x", "period": float("inf"), "v": [float("nan")]})
    obj = json.loads(frame[4:])
    assert obj == {"t": "x", "period": "inf", "v": ["nan"]}


def test_oversized_outbound_frame_is_refused() -> None:
    with pytest.raises(P.FrameError):
        P.encode_frame({"t": "x", "blob": "y" * 100}, limit=50)


def test_macs_bind_both_nonces_and_the_role() -> None:
    tok = b"secret"
    base = P.client_mac(tok, "a" * 32, "b" * 32, "operator")
    assert base != P.client_mac(tok, "a" * 32, "b" * 32, "read")
    assert base != P.client_mac(tok, "c" * 32, "b" * 32, "operator")
    assert base != P.client_mac(b"other", "a" * 32, "b" * 32, "operator")
    assert base != P.server_mac(tok, "a" * 32, "b" * 32, "operator")
    assert P.verify(base, base) and not P.verify(base, None) and not P.verify(base, base[:-1] + "0")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_decoder_only_ever_raises_frame_error_on_garbage(data: bytes) -> None:
    dec = P.FrameDecoder(limit=1024)
    try:
        for frame in dec.feed(data):
            assert isinstance(frame, dict) and isinstance(frame["t"], str)
    except P.FrameError:
        pass


@settings(max_examples=100, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c, max_size=4),
        max_leaves=20,
    )
)
def test_any_json_payload_round_trips(value: object) -> None:
    frame = P.encode_frame({"t": "v", "value": value})
    assert P.FrameDecoder().feed(frame) == [{"t": "v", "value": value}]


# -- TLS -------------------------------------------------------------------------------


def _self_signed(tmp: Path, name: str) -> tuple[Path, Path]:
    cert, key = tmp / f"{name}.pem", tmp / f"{name}.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            f"/CN={name}",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")


@needs_openssl
async def test_tls_agent_accepts_a_client_that_trusts_its_certificate(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path, "agent")
    node = actors.Node.start_in_thread()
    ag = agent.start(node, "127.0.0.1:0", token="tls-token-0123456789", tls_cert=str(cert), tls_key=str(key))
    try:
        ctx = ssl.create_default_context(cafile=str(cert))
        client = await AgentClient.connect(
            "127.0.0.1", ag.port, token="tls-token-0123456789", ssl_context=ctx, server_hostname="127.0.0.1"
        )
        assert (await client.command("ping"))["pong"] is True
        await client.close()
        # a client that does not trust the certificate is refused by its own TLS check
        with pytest.raises(ssl.SSLError):
            await AgentClient.connect(
                "127.0.0.1",
                ag.port,
                token="tls-token-0123456789",
                ssl_context=ssl.create_default_context(),
                server_hostname="127.0.0.1",
            )
        # a plain-TCP client gets nowhere
        with pytest.raises((AgentError, OSError, TimeoutError)):
            await AgentClient.connect("127.0.0.1", ag.port, token="tls-token-0123456789", timeout=2)
    finally:
        ag.stop()
        node.stop_thread()


@needs_openssl
async def test_mutual_tls_requires_a_client_certificate(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path, "agent")
    ccert, ckey = _self_signed(tmp_path, "observer")
    node = actors.Node.start_in_thread()
    ag = agent.start(
        node,
        "127.0.0.1:0",
        token="mtls-token-0123456789",
        tls_cert=str(cert),
        tls_key=str(key),
        tls_ca=str(ccert),
    )
    try:
        ctx = ssl.create_default_context(cafile=str(cert))
        with pytest.raises((ssl.SSLError, AgentError, OSError)):
            await AgentClient.connect(
                "127.0.0.1",
                ag.port,
                token="mtls-token-0123456789",
                ssl_context=ctx,
                server_hostname="127.0.0.1",
                timeout=3,
            )
        ctx.load_cert_chain(str(ccert), str(ckey))
        client = await AgentClient.connect(
            "127.0.0.1", ag.port, token="mtls-token-0123456789", ssl_context=ctx, server_hostname="127.0.0.1"
        )
        assert (await client.command("ping"))["pong"] is True
        await client.close()
    finally:
        ag.stop()
        node.stop_thread()


def test_tls_options_without_a_certificate_are_an_error() -> None:
    node = actors.Node.start_in_thread()
    try:
        with pytest.raises(ValueError):
            agent.start(node, "127.0.0.1:0", token="x" * 20, tls_ca="/nonexistent")
    finally:
        node.stop_thread()


class _Keeper(actors.GenServer):
    """State with a non-finite float; crashes on ``"crash"``."""

    async def init(self) -> Any:
        return {"ratio": float("nan"), "password": "pw-secret"}

    async def handle_cast(self, request: Any, state: Any) -> Any:
        raise ValueError(f"asked to {request}")


class _Events(actors.Instrument):
    def __init__(self) -> None:
        self.events: list[Any] = []

    def _put(self, event: Any) -> None:
        self.events.append(event)

    spawned = exited = restarted = linked = supervisor_gave_up = _put


async def _agent_frames() -> list[dict[str, Any]]:
    """Events, crash reports, a snapshot record and samples as the agent builds
    them, from a supervisor with an infinite period whose child crashes."""
    from agent._crash import CrashLog
    from agent._encode import event_dict, process_record
    from agent._redact import Redactor
    from agent._scrub import RedactionPolicy

    policy = RedactionPolicy()
    red = Redactor(policy)
    crash_log = CrashLog(policy)
    events = _Events()
    async with actors.Node(log_crashes=False) as node:
        node.add_instrument(events)
        sup = await actors.start_supervisor(
            node, [_Keeper.child_spec(id="k")], intensity=1, period=float("inf"), name="sup"
        )
        child = (await actors.which_children(node, sup))[0].pid
        assert child is not None
        node.cast(child, "crash")
        await wait_until(lambda: any(isinstance(e, actors.Restarted) for e in events.events), what="the restart")
        out = [{"t": "snapshot_chunk", "seq": 1, "procs": [process_record(p) for p in node.iter_processes()]}]
        for ev in events.events:
            d = event_dict(ev, node, policy, lambda v: red.encode(v).data)
            if d is None:
                continue
            if getattr(ev, "report", None) is not None:
                d["report"] = crash_log.note(ev.report)
            out.append({**d, "t": "ev", "seq": len(out)})
        out.append({"t": "samples", "rows": [["<0.1.0>", 0, 1, 2, 3, 0.25, "waiting", 1000]], "node": {"time": 1.5}})
    return out


@pytest.mark.parametrize("fast", [False, True])
async def test_the_agents_own_frames_carry_non_finite_numbers_as_text(
    fast: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if fast:
        pytest.importorskip("orjson")
    monkeypatch.setattr(_framing, "FAST_JSON", fast)
    frames = [json.loads(P.encode_frame(f, fast=True)[4:]) for f in await _agent_frames()]
    text = json.dumps(frames)
    budgets = [p["budget"] for p in frames[0]["procs"] if p["budget"]]
    assert budgets and all(b["period"] == "inf" for b in budgets)
    reports = [f["report"] for f in frames if f.get("ev") == "exit" and f.get("report")]
    assert reports and reports[0]["budget"]["period"] == "inf"
    assert reports[0]["state"]["value"]["ratio"] == "NaN" and reports[0]["state"]["value"]["password"] == "***"
    assert "pw-secret" not in text and "null" not in json.dumps([r["budget"] for r in reports])


async def test_fast_json_writes_the_same_frames_as_the_standard_library() -> None:
    pytest.importorskip("orjson")
    for f in await _agent_frames():
        fast = _framing._fast(f)
        assert fast is not None
        assert json.loads(fast) == json.loads(P.encode_frame(f)[4:])
    # what orjson cannot encode goes to the standard library: an int past 64 bits
    assert _framing._fast({"t": "x", "n": 2**70}) is None
    assert json.loads(P.encode_frame({"t": "x", "n": 2**70}, fast=True)[4:]) == {"t": "x", "n": 2**70}
