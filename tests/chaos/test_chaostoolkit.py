"""The Chaos Toolkit extension end to end: the real ``chaos run`` command against a real demo system.

The demo runs in this test process (a node in a thread, its agent on
loopback); ``chaos`` is a separate OS process that attaches to the agent
through the extension's actions and probes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import actors
from tests.chaos.conftest import TOKEN, DemoHost
from tests.chaos.test_engine import idle

ROOT = Path(__file__).resolve().parents[2]
CHAOS = Path(sys.executable).with_name("chaos")

pytestmark = pytest.mark.skipif(not CHAOS.exists(), reason="chaostoolkit is not installed (pip install -e '.[dev]')")


def provider(kind: str, func: str, **arguments: Any) -> dict[str, Any]:
    return {"type": "python", "module": f"observer.chaostoolkit.{kind}", "func": func, "arguments": arguments}


def chaos_run(tmp_path: Path, experiment: dict[str, Any]) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    exp = tmp_path / "experiment.json"
    exp.write_text(json.dumps(experiment))
    journal = tmp_path / "journal.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OBSERVER_AGENT", "OBSERVER_NODE"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(
        [str(CHAOS), "--no-version-check", "--no-log-file", "run", str(exp), "--journal-path", str(journal)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert journal.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads(journal.read_text())


def configuration(host: DemoHost, tmp_path: Path) -> dict[str, Any]:
    tok = tmp_path / "token"
    tok.write_text(TOKEN)
    return {"observer_agent": host.address, "observer_token_file": str(tok)}


def test_chaos_run_with_the_extension_completes_on_the_demo(demo_host: DemoHost, tmp_path: Path) -> None:
    experiment = {
        "title": "the demo heals when its workers are killed",
        "description": "observer.chaostoolkit end to end",
        "configuration": configuration(demo_host, tmp_path),
        "steady-state-hypothesis": {
            "title": "the tree is up and nobody gave up",
            "probes": [
                {"type": "probe", "name": "tree-alive", "tolerance": True,
                 "provider": provider("probes", "tree_alive", names=["demo_sup", "payments_sup", "ledger"])},
                {"type": "probe", "name": "no-give-up", "tolerance": False,
                 "provider": provider("probes", "supervisor_gave_up")},
            ],
        },
        "method": [
            {"type": "action", "name": "kill-payments",
             "provider": provider("actions", "kill_process", target="payments")},
            {"type": "probe", "name": "count", "provider": provider("probes", "process_count")},
            {"type": "action", "name": "kill-random",
             "provider": provider("actions", "kill_random", count=40, interval_ms=10, budget_margin=1, seed=3)},
        ],
        "rollbacks": [],
    }  # fmt: skip
    proc, journal = chaos_run(tmp_path, experiment)
    assert journal["status"] == "completed", (journal["status"], proc.stdout[-3000:], proc.stderr[-3000:])
    assert journal["deviated"] is False
    assert proc.returncode == 0
    runs = {r["activity"]["name"]: r for r in journal["run"]}
    killed = runs["kill-payments"]["output"]
    assert killed["carried_out"] == 1 and killed["kills"][0]["name"] == "payments"
    assert killed["kills"][0]["status"] == "recovered" and killed["kills"][0]["recovery_ms"] >= 0
    randoms = runs["kill-random"]["output"]
    assert randoms["attempted"] == 40 and randoms["carried_out"] >= 5
    assert randoms["give_ups"] == 0
    assert runs["count"]["output"] > 10


@pytest.fixture
def fragile_host() -> Iterator[DemoHost]:
    h = DemoHost(demo=False)
    kids = [actors.worker(f"f{i}", idle, label="FragileWorker") for i in range(3)]
    inner = actors.supervisor_spec("fragile", kids, intensity=1, period=5.0, name="fragile")
    h.run_async(actors.start_supervisor(h.node, [inner], intensity=5, period=5.0, name="fragile_top"))
    yield h
    h.stop()


def test_chaos_run_deviates_when_an_unbounded_kill_makes_a_supervisor_give_up(
    fragile_host: DemoHost, tmp_path: Path
) -> None:
    experiment = {
        "title": "a fragile tree breaks",
        "description": "intensity 1 in 5 s",
        "configuration": configuration(fragile_host, tmp_path),
        "steady-state-hypothesis": {
            "title": "nobody gave up",
            "probes": [{"type": "probe", "name": "no-give-up", "tolerance": False,
                        "provider": provider("probes", "supervisor_gave_up", root="fragile_top")}],
        },
        "method": [{"type": "action", "name": "kill-unbounded",
                    "provider": provider("actions", "kill_random", count=6, interval_ms=50, mode="unbounded",
                                         root="fragile", settle_s=1.0)}],
    }  # fmt: skip
    proc, journal = chaos_run(tmp_path, experiment)
    assert journal["deviated"] is True, proc.stderr[-3000:]  # chaostoolkit's status stays "completed"
    assert journal["steady_states"]["before"]["steady_state_met"] is True
    assert journal["steady_states"]["after"]["steady_state_met"] is False
    assert proc.returncode != 0
    out = journal["run"][0]["output"]
    assert out["give_ups"] >= 1 and out["deviations"]
