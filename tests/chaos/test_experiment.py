"""Experiment files: Chaos Toolkit's shape in, clear errors naming the field for bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from observer.chaos.experiment import ExperimentError, kill_spec, load, parse

ROOT = Path(__file__).resolve().parents[2]


def action(**arguments: Any) -> dict[str, Any]:
    return {"type": "action", "name": "k", "provider": {"type": "observer", "func": "kill", "arguments": arguments}}


def probe(func: str, tolerance: Any, **arguments: Any) -> dict[str, Any]:
    provider = {"type": "observer", "func": func, "arguments": arguments}
    return {"type": "probe", "tolerance": tolerance, "provider": provider}


def test_the_examples_in_the_docs_parse(tmp_path: Path) -> None:
    doc = (ROOT / "docs" / "chaos.md").read_text()
    yaml_text = re.search(r"```yaml\n(.*?)```", doc, re.S)
    assert yaml_text is not None
    p = tmp_path / "exp.yaml"
    p.write_text(yaml_text.group(1))
    exp = load(p)
    assert [k.policy for k in exp.method] == ["interval", "sequence"]
    assert {pr.func for pr in exp.probes} >= {"recovery_ms", "supervisors_gave_up", "children_restored"}
    # and it goes back to the same shape (the journal stores it)
    again = parse(json.loads(json.dumps(exp.to_dict())))
    assert again == exp


def exp(**extra: Any) -> dict[str, Any]:
    return {"title": "t", "method": [action(kills=1)], **extra}


def hyp(p: dict[str, Any]) -> dict[str, Any]:
    return exp(**{"steady-state-hypothesis": {"probes": [p]}})


PYTHON_ACTION = {"type": "action", "provider": {"type": "python", "func": "kill"}}
REBOOT = {"type": "action", "provider": {"type": "observer", "func": "reboot"}}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "an experiment must be an object"),
        ({"method": [action(kills=1)]}, "title is required"),
        ({"title": "t"}, "method must be a non-empty list"),
        (exp(method=[action(kills=1, policy="often")]), "method[0].provider.arguments: policy must be"),
        (exp(method=[action(interval_ms=10)]), "give kills or duration_s"),
        (exp(method=[action(kills=0)]), "kills must be an integer between 1"),
        (exp(method=[action(kills=1, interval_ms=float("nan"))]), "interval_ms must be a number"),
        (exp(method=[action(kills=1, mode="wild")]), "mode must be one of"),
        (exp(method=[action(kills=1, kinds=["thread"])]), "kinds: 'thread' is not"),
        (exp(method=[action(kills=1, bogus=1)]), "unknown field(s): bogus"),
        (exp(method=[action(policy="sequence")]), "needs a non-empty 'sequence'"),
        (exp(method=[PYTHON_ACTION]), "type must be 'observer'"),
        (hyp(probe("uptime", 1)), "func must be one of"),
        (hyp(probe("recovery_ms", -1)), "tolerance must be a number >= 0"),
        (hyp(probe("process_count", "many")), "a percentage like '5%'"),
        (hyp(probe("mailbox", 5)), "arguments.name"),
        (exp(**{"abort-on-deviation": "yes"}), "abort-on-deviation must be true or false"),
        (exp(rollbacks=[REBOOT]), "rollbacks[0].provider.func must be one of"),
    ],
)
def test_bad_experiments_are_refused_naming_the_field(data: Any, message: str) -> None:
    with pytest.raises(ExperimentError) as err:
        parse(data)
    assert message in str(err.value)


def test_unreadable_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ExperimentError, match="cannot read"):
        load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ExperimentError, match="not valid JSON"):
        load(bad)


def test_kill_spec_defaults_spare_supervisors_and_the_agent() -> None:
    spec = kill_spec({"kills": 3})
    assert spec.kinds == ("worker", "gen_server")
    assert spec.protected == ("agent*", "observer*")
    assert spec.mode == "within_budget" and spec.budget_margin == 1
