"""``observer chaos`` end to end: the real command (CliRunner) against a real node and agent."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import actors
from observer.cli import main
from observer.cli.chaos import chaos, experiment_from_options
from tests.chaos.conftest import READ_TOKEN, TOKEN, DemoHost
from tests.chaos.test_engine import idle

YAML = """
title: demo heals within budget
abort-on-deviation: true
settle_s: 5
steady-state-hypothesis:
  title: the tree heals
  probes:
    - {type: probe, name: back within 3 s, tolerance: 3000, provider: {type: observer, func: recovery_ms}}
    - {type: probe, name: nobody gave up, tolerance: 0, provider: {type: observer, func: supervisors_gave_up}}
    - {type: probe, name: every child back, tolerance: true, provider: {type: observer, func: children_restored}}
    - {type: probe, name: ledger mailbox, tolerance: 1000,
       provider: {type: observer, func: mailbox, arguments: {name: ledger}}}
    - {type: probe, name: key processes, tolerance: true,
       provider: {type: observer, func: alive, arguments: {names: [demo_sup, payments_sup]}}}
method:
  - type: action
    name: kill a worker every 10 ms
    provider:
      type: observer
      func: kill
      arguments: {policy: interval, interval_ms: 10, jitter_ms: 5, kills: 100, seed: 11, budget_margin: 1}
rollbacks:
  - {type: action, name: breathe, provider: {type: observer, func: wait, arguments: {seconds: 0.1}}}
"""


@pytest.fixture
def token_file(tmp_path: Path) -> str:
    p = tmp_path / "token"
    p.write_text(TOKEN + "\n")
    return str(p)


@pytest.fixture
def fragile() -> Iterator[DemoHost]:
    h = DemoHost(demo=False)
    kids = [actors.worker(f"f{i}", idle, label="FragileWorker") for i in range(3)]
    h.run_async(actors.start_supervisor(h.node, kids, intensity=1, period=5.0, name="fragile"))
    yield h
    h.stop()


def test_an_experiment_file_that_holds_exits_0_and_writes_the_journal(
    demo_host: DemoHost, token_file: str, tmp_path: Path
) -> None:
    exp = tmp_path / "exp.yaml"
    exp.write_text(YAML)
    out = tmp_path / "journal.json"
    args = ["chaos", "--attach", demo_host.address, "--node-token-file", token_file, "--experiment", str(exp)]
    res = CliRunner().invoke(main, [*args, "--journal", str(out)])
    assert res.exit_code == 0, res.output
    assert "hypothesis HELD" in res.output
    assert "recovery ms p50" in res.output
    j = json.loads(out.read_text())
    assert j["status"] == "completed" and j["hypothesis_held"] is True
    assert j["summary"]["attempted"] == 100
    assert j["summary"]["give_ups"] == 0
    assert j["rollbacks"] == [{"name": "breathe", "func": "wait", "time": j["rollbacks"][0]["time"], "ok": True}]
    phases = {c["phase"] for c in j["checks"]}
    assert phases == {"before", "during", "after"}
    assert all(c["ok"] for c in j["checks"])


def test_an_unbounded_run_on_a_fragile_tree_exits_1_with_the_evidence(
    fragile: DemoHost, token_file: str, tmp_path: Path
) -> None:
    out = tmp_path / "journal.json"
    args = ["chaos", "--attach", fragile.address, "--node-token-file", token_file, "--root", "fragile"]
    args += [
        "--mode",
        "unbounded",
        "--rate",
        "50",
        "--kills",
        "20",
        "--settle-s",
        "2",
        "--journal",
        str(out),
        "--quiet",
    ]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1, res.output
    assert "hypothesis NOT HELD" in res.output
    assert "DEVIATION" in res.output and "gave up" in res.output
    j = json.loads(out.read_text())
    assert j["status"] == "deviated"
    assert j["experiment"]["settle_s"] == 2
    assert j["gave_up"][0]["intensity"] == 1
    budgets = list(j["budgets"].values())
    assert budgets[0]["name"] == "fragile" and budgets[0]["gave_up"] is True
    assert any(d["probe"] == "supervisors_gave_up" for d in j["deviations"])


def test_usage_errors_exit_2(demo_host: DemoHost, token_file: str, tmp_path: Path) -> None:
    r = CliRunner()
    res = r.invoke(main, ["chaos", "--attach", "nonsense", "--node-token-file", token_file, "--kills", "1"])
    assert res.exit_code == 2 and "HOST:PORT" in res.output
    bad = tmp_path / "bad.json"
    provider = {"type": "observer", "func": "kill", "arguments": {"policy": "x", "kills": 1}}
    action = {"type": "action", "provider": provider}
    bad.write_text(json.dumps({"title": "x", "method": [action]}))
    res = r.invoke(
        main, ["chaos", "--attach", demo_host.address, "--node-token-file", token_file, "--experiment", str(bad)]
    )
    assert res.exit_code == 2 and "method[0].provider.arguments: policy must be one of" in res.output
    res = r.invoke(main, ["chaos", "--attach", demo_host.address, "--node-token-file", token_file])
    assert res.exit_code == 2 and "give kills or duration_s" in res.output
    env = {"OBSERVER_NODE_TOKEN": "", "OBSERVER_NODE_TOKEN_FILE": "", "OBSERVER_AGENT_TOKEN": "agent-own-token"}
    res = r.invoke(main, ["chaos", "--attach", demo_host.address, "--kills", "1"], env=env)
    assert res.exit_code == 2 and "no token for" in res.output and "--node-token-file" in res.output
    assert "OBSERVER_AGENT_TOKEN is the agent's own token" in res.output
    for old in (["--duration", "5"], ["--settle", "1"], ["--token-file", token_file]):
        res = r.invoke(main, ["chaos", "--attach", demo_host.address, "--kills", "1", *old])
        assert res.exit_code == 2 and "No such option" in res.output, old
    notyaml = tmp_path / "x.yaml"
    notyaml.write_text("title: [unclosed\n")
    args = ["chaos", "--attach", demo_host.address, "--node-token-file", token_file]
    res = r.invoke(main, [*args, "--experiment", str(notyaml)])
    assert res.exit_code == 2 and "not valid YAML" in res.output


def test_a_read_only_token_cannot_run_an_experiment(demo_host: DemoHost, tmp_path: Path) -> None:
    p = tmp_path / "read-token"
    p.write_text(READ_TOKEN)
    res = CliRunner().invoke(
        main, ["chaos", "--attach", demo_host.address, "--node-token-file", str(p), "--kills", "1"]
    )
    assert res.exit_code == 3
    assert "cannot attach" in res.output or "not an operator token" in res.output


def test_duration_flags_carry_their_unit_like_the_experiment_file() -> None:
    args = ["--attach", "127.0.0.1:1", "--duration-s", "2.5", "--settle-s", "0.5", "--interval-ms", "40"]
    args += ["--jitter-ms", "5", "--recovery-ms", "1500"]
    with chaos.make_context("chaos", args) as ctx:
        exp = experiment_from_options(ctx.params | {"_policy_given": False})
    (spec,) = exp.method
    assert (spec.duration_s, spec.interval_ms, spec.jitter_ms, exp.settle_s) == (2.5, 40.0, 5.0, 0.5)
    assert exp.to_dict()["settle_s"] == 0.5
    assert [p.tolerance for p in exp.probes if p.func == "recovery_ms"] == [1500.0]
    with chaos.make_context("chaos", ["--attach", "127.0.0.1:1", "--rate", "20", "--kills", "3"]) as ctx:
        (spec,) = experiment_from_options(ctx.params | {"_policy_given": False}).method
    assert spec.interval_ms == 50.0 and spec.kills == 3
