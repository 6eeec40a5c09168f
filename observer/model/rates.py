"""Samples: message rates, mailboxes and counters per process, and the node's time series.

Samples are the one kind of message history does not store (see
:mod:`observer.store`): what they add lives in :class:`~observer.model.state.Rates`
and in the records' counter fields. The reducer calls these functions; they
touch nothing but the state they are given.
"""

from __future__ import annotations

import heapq
from typing import Any

import networkx as nx

from .state import Change, Rates, State

__all__ = ["TOP_MAILBOXES", "fold_samples", "forget", "keep_only", "stopped"]

TOP_MAILBOXES = 5
"""Processes in each point of the ``top_mailboxes`` series."""


def fold_samples(state: State, msg: dict[str, Any], now: float) -> list[Change]:
    """Fold one ``samples`` message: per-process rows, and the node's counters if present."""
    r = state.rates
    stats = msg.get("node")
    t = float(stats.get("time") or now) if isinstance(stats, dict) else (r.sample_time or now)
    nodes = state.graph._node
    last_in = r.last_in
    seen: set[str] = set()
    nonzero = r.rate_nonzero
    mbz = r.mailbox_nonzero
    rows = msg.get("rows") or ()
    for row in rows:
        try:
            pid, mailbox, msgs_in, msgs_out, handled, handler_time, status = row[:7]
        except (TypeError, ValueError):
            continue
        rec = nodes.get(pid)
        if rec is None:
            continue
        prev = last_in.get(pid)
        if prev is not None:
            prev_t, prev_in = (prev, 0) if prev.__class__ is float else prev  # type: ignore[misc]
            if t > prev_t:
                rate = max(0, msgs_in - prev_in) / (t - prev_t)
                rec["rate"] = round(rate, 3)
                if rate > 0:
                    nonzero.add(pid)
                    seen.add(pid)
        # a process that never received a message (most of a big idle node) keeps just the
        # time, one float shared by the whole message, not a tuple of its own (~64 B each)
        last_in[pid] = (t, msgs_in) if msgs_in else t
        rec["mailbox"] = mailbox
        rec["msgs_in"] = msgs_in
        rec["msgs_out"] = msgs_out
        rec["handled"] = handled
        rec["handler_time"] = handler_time
        rec["status"] = status
        if len(row) > 7 and row[7] is not None:
            rec["memory"] = row[7]
        if mailbox:
            mbz.add(pid)
        else:
            mbz.discard(pid)
    if isinstance(stats, dict):
        # rows only carry processes that changed: the others received nothing
        for pid in nonzero - seen:
            rec = nodes.get(pid)
            if rec is not None:
                rec["rate"] = 0.0
        r.rate_nonzero = seen
        _node_stats(r, state.graph, stats, t)
    return [Change("samples", None, {"rows": len(rows)})]


def _node_stats(r: Rates, g: nx.DiGraph, stats: dict[str, Any], now: float) -> None:
    prev = r.prev_stats
    r.stats = dict(stats)
    r.sample_time = now
    s = r.series
    s["process_count"].append([now, stats.get("process_count")])
    s["loop_lag_ms"].append([now, stats.get("loop_lag_ms")])
    if prev is not None and now > float(prev.get("time") or 0):
        dt = now - float(prev["time"])
        s["message_rate"].append([now, round(float(stats.get("messages") or 0) / dt, 3)])
        dr = int(stats.get("restarts") or 0) - int(prev.get("restarts") or 0)
        s["restart_rate"].append([now, round(max(0, dr) / dt, 3)])
    nodes = g._node
    top = heapq.nlargest(TOP_MAILBOXES, r.mailbox_nonzero, key=lambda p: nodes[p].get("mailbox") or 0)
    s["top_mailboxes"].append(
        [now, [[p, nodes[p].get("name") or nodes[p].get("label"), nodes[p].get("mailbox")] for p in top]]
    )
    r.prev_stats = r.stats
    horizon = now - r.window
    for q in s.values():
        while q and q[0][0] < horizon:
            q.popleft()


def forget(r: Rates, pid: str) -> None:
    """``pid`` exited."""
    r.last_in.pop(pid, None)
    r.rate_nonzero.discard(pid)
    r.mailbox_nonzero.discard(pid)


def keep_only(r: Rates, g: nx.DiGraph) -> Rates:
    """The rates carried over to a new snapshot's graph ``g`` (a new object: ``r`` is left as it is)."""
    nodes = g._node
    return Rates(
        window=r.window,
        last_in={p: v for p, v in r.last_in.items() if p in nodes},
        rate_nonzero={p for p in r.rate_nonzero if p in nodes and nodes[p].get("rate")},
        mailbox_nonzero={p for p, rec in nodes.items() if rec.get("mailbox")},
        stats=r.stats,
        prev_stats=r.prev_stats,
        sample_time=r.sample_time,
        series=r.series,
    )


def stopped(state: State) -> None:
    """The link went down: nothing is received any more."""
    nodes = state.graph._node
    for pid in state.rates.rate_nonzero:
        rec = nodes.get(pid)
        if rec is not None:
            rec["rate"] = 0.0
    state.rates.rate_nonzero.clear()
