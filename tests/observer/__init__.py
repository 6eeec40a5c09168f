"""Helpers for the observer tests: synthetic agent messages, a real host, polling."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

TOKEN = "observer-test-operator-token-0123456789"
READ_TOKEN = "observer-test-read-token-9876543210"


def wait_for(pred: Callable[[], Any], *, timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``pred`` (from a plain thread) until it is truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def rec(pid: str, **kw: Any) -> dict[str, Any]:
    """A process record as in a snapshot."""
    r: dict[str, Any] = {
        "pid": pid,
        "name": None,
        "label": "worker",
        "kind": "worker",
        "status": "waiting",
        "supervisor": None,
        "parent": None,
        "child_id": None,
        "restarts": 0,
        "mailbox": 0,
        "msgs_in": 0,
        "msgs_out": 0,
        "handled": 0,
        "handler_time": 0.0,
        "links": [],
        "monitors": [],
        "trap_exit": False,
        "started_at": 1000.0,
        "budget": None,
    }
    r.update(kw)
    return r


def sup(pid: str, strategy: str = "one_for_one", intensity: int = 3, used: int = 0, **kw: Any) -> dict[str, Any]:
    kw.setdefault("label", "Supervisor")
    return rec(
        pid,
        kind="supervisor",
        trap_exit=True,
        budget={"used": used, "intensity": intensity, "period": 5.0, "strategy": strategy},
        **kw,
    )


def linked(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add the supervisor<->child links (as the runtime has them) to the records."""
    by = {r["pid"]: r for r in records}
    for r in records:
        s = r.get("supervisor")
        if s and s in by:
            if s not in r["links"]:
                r["links"].append(s)
            if r["pid"] not in by[s]["links"]:
                by[s]["links"].append(r["pid"])
    return records


def snapshot(
    records: list[dict[str, Any]], seq: int = 0, names: dict[str, str] | None = None, chunk: int = 2000
) -> list[dict[str, Any]]:
    """The messages of one snapshot."""
    out: list[dict[str, Any]] = [{"t": "snapshot_begin", "seq": seq, "count": len(records), "node": {"node_id": 1}}]
    for i in range(0, len(records), chunk):
        out.append({"t": "snapshot_chunk", "seq": seq, "procs": records[i : i + chunk]})
    out.append({"t": "snapshot_end", "seq": seq, "names": names or {}})
    return out


def ev(what: str, seq: int, /, **fields: Any) -> dict[str, Any]:
    fields.setdefault("time", 2000.0 + seq)
    return {"t": "ev", "seq": seq, "ev": what, **fields}
