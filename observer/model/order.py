"""Sort orders of the process table, computed once and paged many times.

Sorting a million records per request (a Python key function per record) takes
seconds and would hold the model's lock meanwhile. Instead the facade keeps,
per sort key, the pids in *ascending* order (ties by pid) for a short while
(:data:`~observer.model.node.ORDER_MAX_AGE`): a page is a slice of it, read
backwards for a descending sort, and its rows are read fresh from the
records. The order is computed from a copy of the node table, off the lock,
with C-level key extraction (:func:`operator.attrgetter` on the slotted
:class:`~observer.model.records.Proc`) and a sort of indices by value; the
pid order is the base, so the sort's stability breaks ties by pid.

Rows whose value is None (``memory`` before it is known) come last in both
directions: :class:`Order` keeps how many are known.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from itertools import compress, repeat
from typing import Any

from .records import Proc
from .state import pid_key

__all__ = ["Order", "compute_order", "page_pids"]

_STRING_KEYS = ("label", "status")


@dataclass(slots=True, frozen=True)
class Order:
    """The pids in ascending order of one sort key."""

    sort: str
    pids: list[str]
    known: int
    """The first ``known`` pids have a value; the rest (None) are in pid order."""


def _getter(nodes: Mapping[str, Any], field: str) -> Callable[[Any], Any]:
    first = next(iter(nodes.values()), None)
    if first is None or isinstance(first, Proc):
        return operator.attrgetter(field)  # ~40 ns a record
    return lambda r: r.get(field)


def compute_order(nodes: Mapping[str, Any], sort: str, *, pid_ordered: bool = False) -> Order:
    """The ascending order of ``nodes`` (pid -> record) by ``sort``, ties by pid
    (``pid_ordered``: ``nodes`` is in pid order already, see :attr:`State.pid_ordered
    <observer.model.state.State.pid_ordered>`)."""
    base = list(nodes) if pid_ordered else sorted(nodes, key=pid_key)
    if sort == "pid":
        return Order(sort, base, len(base))
    recs = list(nodes.values()) if pid_ordered else [nodes[p] for p in base]
    vals: list[Any] = list(map(_getter(nodes, sort), recs))
    if sort == "name":
        labels = list(map(_getter(nodes, "label"), recs))
        vals = _lowered([n or lb for n, lb in zip(vals, labels, strict=True)])
    elif sort in _STRING_KEYS:
        vals = _lowered(vals)
    elif sort == "memory":
        if None in vals:
            known = list(compress(range(len(vals)), map(operator.is_not, vals, repeat(None))))
            unknown = list(compress(base, map(operator.is_, vals, repeat(None))))
            kept = _ordered(list(map(base.__getitem__, known)), list(map(vals.__getitem__, known)), numeric=True)
            return Order(sort, kept + unknown, len(known))
        return Order(sort, _ordered(base, vals, numeric=True), len(base))
    elif None in vals:
        vals = [v or 0 for v in vals]
    return Order(sort, _ordered(base, vals, numeric=sort not in _STRING_KEYS and sort != "name"), len(base))


def _lowered(vals: list[Any]) -> list[str]:
    """Sort keys of strings (None: ""), lowered once per distinct value (a million records
    hold a few thousand distinct names and labels)."""
    low = {v: str(v or "").lower() for v in set(vals)}
    return list(map(low.__getitem__, vals))


def _ordered(base: list[str], vals: list[Any], *, numeric: bool = False) -> list[str]:
    """``base`` (in pid order) stably sorted by ``vals``. Every value the same (an idle
    node's counters): the pid order is the order. Numbers, none negative, mostly 0 (the
    workers of a big idle node; its supervisors handled messages): the zeros first in pid
    order, then only the others sorted. Else an index sort."""
    n = len(vals)
    if not vals or vals.count(vals[0]) == n:
        return base
    if numeric and min(vals) >= 0:
        nonzero = list(compress(range(n), vals))
        if len(nonzero) <= n // 2:
            nonzero.sort(key=vals.__getitem__)
            return list(compress(base, map(operator.not_, vals))) + list(map(base.__getitem__, nonzero))
    idx = sorted(range(n), key=vals.__getitem__)
    return list(map(base.__getitem__, idx))


def page_pids(order: Order, desc: bool, offset: int) -> Iterator[str]:
    """The pids from position ``offset`` on, ascending or descending (unknown values last either way)."""
    pids, k, n = order.pids, order.known, len(order.pids)
    offset = max(0, offset)
    if not desc:
        yield from (pids[i] for i in range(offset, n))
        return
    for i in range(offset, n):
        yield pids[k - 1 - i] if i < k else pids[i]
