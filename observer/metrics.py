"""Prometheus metrics: a collector that reads the live model at scrape time.

:class:`ObserverCollector` is a ``prometheus_client`` custom collector: each
scrape asks the models (through :class:`observer.app.ObserverState`) and the
history store for what they hold now; nothing is counted twice or kept
between scrapes. The series (``docs/metrics.md`` lists them with their
labels):

* per node: processes (and by status), supervisors, the largest mailbox, the
  summed mailboxes, loop lag, message and restart rates, restarts and crashes
  counted by the agent, events received, snapshots, gaps and dropped events,
  the agent link state (a state set: ``connecting``, ``syncing``, ``up``,
  ``down``) and when the node was last heard from;
* per supervisor: children, their restarts and their largest mailbox, for at
  most ``max_supervisors`` supervisors of a node (those with the most
  restarts, then the most children); the rest add up under
  ``supervisor="other"``;
* crashes by signature, from the history: the ``top_signatures`` largest
  groups of each node and the rest under ``signature="other"``, so a crash
  with a new signature every time cannot grow the label set without bound;
* the history: whether it can be written, rows pending, written and dropped.

Access (:func:`install`)
    Off unless configured. With a scrape token, ``GET /metrics`` on the
    observer's own port answers a request that carries
    ``Authorization: Bearer TOKEN`` (compared in constant time) and 401
    otherwise; without one the path is not there (404). With a listen
    address, a separate plain HTTP server serves the same metrics on that
    address (the network is then the access rule; with a token it checks
    the token too).

Threading rules
    ``collect`` runs on the thread that serves the scrape (a request thread of
    the observer, or the listener's own thread); it only calls the thread-safe
    read API of the models and the store, and a node whose model fails to
    answer is left out of that scrape (logged), never failing the others.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
    StateSetMetricFamily,
)

from . import __version__
from .attach import parse_address

__all__ = ["LINK_STATES", "OTHER", "MetricsServer", "ObserverCollector", "bearer_guard", "install"]

log = logging.getLogger("observer.metrics")

LINK_STATES = ("connecting", "syncing", "up", "down")
"""The states of an agent link (the model's ``status``)."""
OTHER = "other"
"""The label value that sums what is beyond a label's bound."""
PATH = "/metrics"

StateReader = Any
"""An :class:`observer.app.ObserverState` (typed loosely: this module sits below the app)."""


class ObserverCollector:
    """Reads ``state``'s models and store at each scrape (see the module docstring)."""

    def __init__(self, state: StateReader, *, top_signatures: int = 10, max_supervisors: int = 50) -> None:
        if top_signatures < 1 or max_supervisors < 1:
            raise ValueError("top_signatures and max_supervisors must be at least 1")
        self.state = state
        self.top_signatures = top_signatures
        self.max_supervisors = max_supervisors

    def describe(self) -> Iterable[Metric]:
        return []  # names depend on nothing but are built per scrape: no duplicate checks at registration

    def collect(self) -> Iterator[Metric]:
        node = ["node"]
        m: dict[str, Metric] = {
            "up": GaugeMetricFamily("observer_node_up", "1 if the agent link is up", labels=node),
            "link": StateSetMetricFamily("observer_agent_link_state", "The agent link's state", labels=node),
            "procs": GaugeMetricFamily("observer_node_processes", "Processes in the live picture", labels=node),
            "by_status": GaugeMetricFamily(
                "observer_node_processes_by_status", "Processes by status", labels=[*node, "status"]
            ),
            "sups": GaugeMetricFamily("observer_node_supervisors", "Supervisors", labels=node),
            "mailbox_max": GaugeMetricFamily(
                "observer_node_mailbox_max_messages", "The largest mailbox of the node", labels=node
            ),
            "mailbox_sum": GaugeMetricFamily(
                "observer_node_mailbox_messages", "Messages waiting in all mailboxes", labels=node
            ),
            "lag": GaugeMetricFamily("observer_node_loop_lag_seconds", "Event loop lag seen by the agent", labels=node),
            "msg_rate": GaugeMetricFamily(
                "observer_node_message_rate", "Messages handled per second (agent sample)", labels=node
            ),
            "restart_rate": GaugeMetricFamily(
                "observer_node_restart_rate", "Restarts per second (agent sample)", labels=node
            ),
            "restarts": CounterMetricFamily("observer_node_restarts", "Restarts counted by the agent", labels=node),
            "crashes": CounterMetricFamily("observer_node_crashes", "Crashes counted by the agent", labels=node),
            "events": CounterMetricFamily(
                "observer_node_events", "Events received from the agent (sequence number)", labels=node
            ),
            "snapshots": CounterMetricFamily("observer_node_snapshots", "Full snapshots received", labels=node),
            "gaps": CounterMetricFamily("observer_node_gaps", "Gaps announced by the agent (resyncs)", labels=node),
            "dropped": CounterMetricFamily(
                "observer_node_agent_events_dropped", "Events the agent dropped under load", labels=node
            ),
            "seen": GaugeMetricFamily(
                "observer_node_last_seen_timestamp_seconds", "When the agent was last heard from", labels=node
            ),
        }
        sup = ["node", "supervisor"]
        s: dict[str, Metric] = {
            "children": GaugeMetricFamily("observer_supervisor_children", "Children of a supervisor", labels=sup),
            "restarts": CounterMetricFamily(
                "observer_supervisor_child_restarts", "Restarts of a supervisor's current children", labels=sup
            ),
            "mailbox": GaugeMetricFamily(
                "observer_supervisor_mailbox_max_messages", "The largest mailbox among the children", labels=sup
            ),
        }
        crash_total = CounterMetricFamily(
            "observer_crashes_by_signature",
            f"Stored crashes by signature (the top {self.top_signatures} of each node, the rest as '{OTHER}')",
            labels=["node", "signature"],
        )
        for name in self.state.nodes():
            try:
                self._node(name, m, s)
            except Exception:
                log.exception("observer: metrics: node %s left out of this scrape", name)
        try:
            self._crashes(crash_total)
        except Exception:
            log.exception("observer: metrics: crash groups left out of this scrape")
        yield from self._history()
        info = InfoMetricFamily("observer", "The observer serving these metrics")
        info.add_metric([], {"version": __version__})
        yield info
        yield from m.values()
        yield from s.values()
        yield crash_total

    def _node(self, name: str, m: dict[str, Metric], s: dict[str, Metric]) -> None:
        model = self.state.model(name)
        if model is None:
            return
        summ = model.summary()
        status = str(summ.get("status") or "connecting")
        lv = [name]
        m["up"].add_metric(lv, 1.0 if status == "up" else 0.0)  # type: ignore[attr-defined]
        m["link"].add_metric(lv, {st: st == status for st in LINK_STATES})  # type: ignore[attr-defined]
        m["procs"].add_metric(lv, summ.get("process_count") or 0)  # type: ignore[attr-defined]
        for st, n in sorted((summ.get("status_counts") or {}).items()):
            m["by_status"].add_metric([name, str(st)], n)  # type: ignore[attr-defined]
        m["sups"].add_metric(lv, summ.get("supervisor_count") or 0)  # type: ignore[attr-defined]
        m["mailbox_sum"].add_metric(lv, summ.get("mailbox_total") or 0)  # type: ignore[attr-defined]
        _maybe(m["lag"], lv, summ.get("loop_lag_ms"), 1e-3)
        _maybe(m["msg_rate"], lv, summ.get("message_rate"))
        _maybe(m["restart_rate"], lv, summ.get("restart_rate"))
        _maybe(m["restarts"], lv, summ.get("restarts"))
        _maybe(m["crashes"], lv, summ.get("crashes"))
        _maybe(m["dropped"], lv, summ.get("agent_events_dropped"))
        _maybe(m["seen"], lv, summ.get("last_seen"))
        m["events"].add_metric(lv, summ.get("seq") or 0)  # type: ignore[attr-defined]
        m["snapshots"].add_metric(lv, summ.get("snapshots") or 0)  # type: ignore[attr-defined]
        m["gaps"].add_metric(lv, summ.get("gaps") or 0)  # type: ignore[attr-defined]
        agg = _Aggregates.of(model)
        m["mailbox_max"].add_metric(lv, agg.largest)  # type: ignore[attr-defined]
        self._supervisors(name, agg, s)

    def _supervisors(self, node: str, agg: _Aggregates, s: dict[str, Metric]) -> None:
        label, children, restarts, mailbox = agg.label, agg.children, agg.restarts, agg.mailbox
        ranked = sorted(children, key=lambda p: (-restarts[p], -children[p], str(label.get(p, p))))
        shown, rest = ranked[: self.max_supervisors], ranked[self.max_supervisors :]
        for sup in shown:
            lv = [node, str(label.get(sup, sup))]
            s["children"].add_metric(lv, children[sup])  # type: ignore[attr-defined]
            s["restarts"].add_metric(lv, restarts[sup])  # type: ignore[attr-defined]
            s["mailbox"].add_metric(lv, mailbox.get(sup, 0))  # type: ignore[attr-defined]
        if rest:
            lv = [node, OTHER]
            s["children"].add_metric(lv, sum(children[p] for p in rest))  # type: ignore[attr-defined]
            s["restarts"].add_metric(lv, sum(restarts[p] for p in rest))  # type: ignore[attr-defined]
            s["mailbox"].add_metric(lv, max(mailbox.get(p, 0) for p in rest))  # type: ignore[attr-defined]

    def _history(self) -> Iterator[Metric]:
        try:
            st = self.state.store.stats()
        except Exception:
            log.exception("observer: metrics: the history's state left out of this scrape")
            return
        yield GaugeMetricFamily(
            "observer_history_healthy", "1 while the history can be written", value=1.0 if st.get("healthy") else 0.0
        )
        yield GaugeMetricFamily(
            "observer_history_pending_rows", "Rows waiting to be written to the history", value=st.get("pending") or 0
        )
        yield CounterMetricFamily(
            "observer_history_written_rows", "Rows written to the history", value=st.get("written") or 0
        )
        yield CounterMetricFamily(
            "observer_history_dropped_rows", "Rows dropped while the history could not be written",
            value=st.get("dropped") or 0,
        )  # fmt: skip

    def _crashes(self, family: Metric) -> None:
        by_node: dict[str, list[tuple[int, str]]] = {}
        for g in crash_groups(self.state.store):
            by_node.setdefault(str(g["node"]), []).append((int(g.get("count") or 0), str(g["signature"])))
        for node, groups in sorted(by_node.items()):
            groups.sort(key=lambda cs: (-cs[0], cs[1]))
            for count, sig in groups[: self.top_signatures]:
                family.add_metric([node, sig], count)  # type: ignore[attr-defined]
            if len(groups) > self.top_signatures:
                family.add_metric([node, OTHER], sum(c for c, _ in groups[self.top_signatures :]))  # type: ignore[attr-defined]


class _Aggregates:
    """One pass over a node's processes: the largest mailbox, and per supervisor its
    children, their restarts and their largest mailbox."""

    __slots__ = ("children", "label", "largest", "mailbox", "restarts")

    def __init__(self) -> None:
        self.largest = 0
        self.label: dict[str, str] = {}
        self.children: Counter[str] = Counter()
        self.restarts: Counter[str] = Counter()
        self.mailbox: dict[str, int] = {}

    @classmethod
    def of(cls, model: Any) -> _Aggregates:
        """Read under the model's lock, without copying or sorting the process table
        (a scrape must not hold up the model's updates for long)."""
        out = cls()
        with model.locked() as g:
            for pid, rec in g.nodes(data=True):
                mb = rec.get("mailbox") or 0
                if mb > out.largest:
                    out.largest = mb
                if rec.get("kind") == "supervisor":
                    out.label[pid] = rec.get("name") or pid
                    out.children.setdefault(pid, 0)
                sup = rec.get("supervisor")
                if sup is not None:
                    out.children[sup] += 1
                    out.restarts[sup] += rec.get("restarts") or 0
                    if mb > out.mailbox.get(sup, 0):
                        out.mailbox[sup] = mb
        return out


def crash_groups(store: Any, limit: int = 100_000) -> list[dict[str, Any]]:
    """Every crash group of the history (node, signature, count, ...)."""
    return list(store.crash_groups(limit=limit))


def _maybe(family: Metric, labels: list[str], value: Any, scale: float = 1.0) -> None:
    if isinstance(value, int | float):
        family.add_metric(labels, float(value) * scale)  # type: ignore[attr-defined]


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def bearer_guard(app: WsgiApp, token: str | None) -> WsgiApp:
    """``app`` behind ``Authorization: Bearer token`` (any request when ``token`` is None)."""
    expected = f"Bearer {token}".encode() if token else None

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if expected is not None:
            given = str(environ.get("HTTP_AUTHORIZATION", "")).encode()
            if not hmac.compare_digest(given, expected):
                start_response(
                    "401 Unauthorized",
                    [("Content-Type", "text/plain"), ("WWW-Authenticate", 'Bearer realm="metrics"')],
                )
                return [b"a scrape token is required (Authorization: Bearer ...)\n"]
        return app(environ, start_response)

    return guarded


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics: " + format, *args)


class MetricsServer:
    """A separate plain HTTP server for the metrics (``--metrics-listen``), on its own thread."""

    def __init__(self, address: str, app: WsgiApp) -> None:
        host, port = parse_address(address)
        self.server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, name="observer-metrics", daemon=True)
        self.thread.start()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.server.shutdown()
            self.server.server_close()
        self.thread.join(5)


def install(
    flask_app: Any, state: StateReader, *, token: str | None, listen: str | None = None
) -> MetricsServer | None:
    """Serve the metrics of ``state``: at ``/metrics`` of ``flask_app`` when ``token`` is
    given, and on a separate server at ``listen`` when given. Returns that server."""
    if not token and not listen:
        return None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ObserverCollector(state))
    app = bearer_guard(make_wsgi_app(registry), token)
    if token:
        inner = flask_app.wsgi_app

        def dispatch(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            if environ.get("PATH_INFO") == PATH:
                return app(environ, start_response)
            return inner(environ, start_response)

        flask_app.wsgi_app = dispatch
    return MetricsServer(listen, app) if listen else None
