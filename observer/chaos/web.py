"""Running chaos experiments for the web app, and the browser form's experiments.

:class:`ChaosService` keeps the app's engines (one running experiment per
node at most), saves journals to the history's ``chaos_experiments`` table
when an experiment starts and ends, and pushes progress to the ``chaos`` feed
of ``/live``. :func:`experiment_from_body` reads the experiment a
``POST /api/chaos/experiments`` describes. The routes are in
:mod:`observer.views.chaos` (see ``docs/chaos.md``).

Threading rules
    Engines run on the attach loop thread (:class:`~observer.chaos.engine.Engine`)
    and call the progress hook there: it only notes the kill and hands a
    lazy payload to the publisher (never blocks). :class:`ChaosService` guards
    its registry with a lock; the rest is called from request threads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from .engine import Engine
from .experiment import Experiment, ExperimentError, Probe, kill_spec, parse
from .journal import ChaosHistory

__all__ = ["ChaosService", "Publish", "experiment_from_body"]

log = logging.getLogger("observer.chaos.web")

Publish = Callable[..., None]
"""``publish(feed, payload, key=None)`` (:meth:`observer.live.LiveHub.publish`)."""
KILLS_PER_PUSH = 500
"""Kills carried by one progress push (more: the browser refetches the journal)."""


class ChaosService:
    """Running experiments of one app, and the history of past ones."""

    def __init__(self, state: Any, publish: Publish | None = None) -> None:
        self.state = state
        self.publish = publish
        self.lock = threading.Lock()
        self.engines: dict[str, Engine] = {}
        self.history = ChaosHistory(state.store.db)
        self._new_kills: dict[str, list[dict[str, Any]]] = {}

    def running(self, node: str | None = None) -> list[Engine]:
        with self.lock:
            engines = list(self.engines.values())
        return [e for e in engines if e.journal.ended is None and (node is None or e.att.name == node)]

    def get(self, exp_id: str) -> Engine | None:
        with self.lock:
            return self.engines.get(exp_id)

    def start(self, engine: Engine) -> None:
        with self.lock:
            self.engines[engine.id] = engine
            while len(self.engines) > 20:  # finished ones stay a while, then live on in the history
                old = next((k for k, e in self.engines.items() if e.journal.ended is not None), None)
                if old is None:
                    break
                del self.engines[old]
        self._save(engine.journal.to_dict())
        engine.on_progress = lambda kind, data: self._progress(engine, kind, data)
        self._push(engine)
        fut = engine.start()
        fut.add_done_callback(lambda f: threading.Thread(target=self._finished, args=(engine,), daemon=True).start())

    def _finished(self, engine: Engine) -> None:
        self._save(engine.journal.to_dict())
        if self.publish is not None:  # the history now holds the final journal
            self.publish("chaos", {"id": engine.id, "node": engine.att.name, "saved": True})

    # -- progress (attach loop thread) -----------------------------------------------------------

    def _progress(self, engine: Engine, kind: str, data: dict[str, Any]) -> None:
        if kind == "kill":
            with self.lock:
                self._new_kills.setdefault(engine.id, []).append(data)
        self._push(engine)

    def _push(self, engine: Engine) -> None:
        """Hand the publisher a lazy progress payload, coalesced per experiment:
        the journal's head is read when the push goes out, not at every kill."""
        if self.publish is not None:
            self.publish("chaos", lambda: self.progress(engine), key=f"chaos:{engine.id}")

    def progress(self, engine: Engine) -> dict[str, Any]:
        """The journal without its kills, plus the kills resolved since the last push."""
        with self.lock:
            kills = self._new_kills.pop(engine.id, [])
        head = engine.journal.to_dict(kills_limit=0) | {"kills": kills[-KILLS_PER_PUSH:]}
        head["kills_dropped"] = max(0, len(kills) - KILLS_PER_PUSH)
        head["kills_total"] = len(engine.journal.kills)
        return head

    def _save(self, journal: dict[str, Any]) -> None:
        try:
            self.history.save(journal)
        except Exception:
            log.exception("chaos: could not save the journal of %s", journal.get("id"))


def _probes(h: dict[str, Any]) -> tuple[Probe, ...]:
    """The browser form's hypothesis -> probes (checked like a file's)."""
    if not isinstance(h, dict):
        raise ExperimentError("hypothesis must be an object")
    raw: list[dict[str, Any]] = []

    def add(func: str, tol: Any, name: str, args: dict[str, Any] | None = None) -> None:
        provider = {"type": "observer", "func": func, "arguments": args or {}}
        raw.append({"type": "probe", "name": name, "tolerance": tol, "provider": provider})

    add("recovery_ms", h.get("recovery_ms", 5000), "killed children back in time")
    add("supervisors_gave_up", h.get("max_give_ups", 0), "no supervisor gave up")
    if h.get("children_restored", True):
        add("children_restored", True, "every supervised child is back")
    if h.get("process_tolerance") not in (None, ""):
        add("process_count", h["process_tolerance"], "process count back to its level")
    for m in h.get("mailbox") or []:
        if not isinstance(m, dict):
            raise ExperimentError("hypothesis.mailbox entries must be objects {name, max}")
        add("mailbox", m.get("max"), f"mailbox of {m.get('name')}", {"name": m.get("name")})
    if h.get("alive"):
        add("alive", True, "named processes alive", {"names": h["alive"]})
    exp = parse({"title": "-", "steady-state-hypothesis": {"probes": raw}, "method": [_KILL_PLACEHOLDER]})
    return exp.probes


_KILL_PLACEHOLDER = {"type": "action", "provider": {"type": "observer", "func": "kill", "arguments": {"kills": 1}}}


def experiment_from_body(body: dict[str, Any]) -> Experiment:
    """The experiment a POST describes (raises :class:`ExperimentError`)."""
    if "experiment" in body:
        return parse(body["experiment"])
    kill = body.get("kill")
    if not isinstance(kill, dict):
        raise ExperimentError("give 'experiment' (file-shaped) or 'kill' (the kill policy)")
    spec = kill_spec(kill, where="kill")
    settle = body.get("settle_s", 10.0)
    if isinstance(settle, bool) or not isinstance(settle, int | float) or not 0 <= settle <= 600:
        raise ExperimentError("settle_s must be a number between 0 and 600")
    abort = body.get("abort_on_deviation", True)
    if not isinstance(abort, bool):
        raise ExperimentError("abort_on_deviation must be true or false")
    title = body.get("title") or f"{spec.mode} {spec.policy} kills"
    if not isinstance(title, str) or len(title) > 200:
        raise ExperimentError("title must be a short string")
    return Experiment(
        title=title,
        probes=_probes(body.get("hypothesis") or {}),
        method=(spec,),
        abort_on_deviation=abort,
        settle_s=float(settle),
    )
