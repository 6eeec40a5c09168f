"""Compact per-process storage: the graph's node records and edge flags.

A million observed processes have to fit in a couple of gigabytes, the live
model's graph and the history writer's together. Measured at 100,000
processes (``tracemalloc``, see ``docs/benchmarks.md``), a plain dict per
record (19 keys: ~500 B), a dict per edge (~370 B a process: two edges per
supervised child) and the wire's own copy of every string value
(``"worker"``, ``"waiting"``, the supervisor's pid, ... : ~500 B) were most
of the ~2.1 KB a process cost. So:

* :class:`Proc` is a slotted record (one pointer per field) that behaves as
  the mutable mapping the rest of the package reads (``rec.get(k)``,
  ``rec[k] = v``, ``dict(rec)``); a field never set reads as its
  :data:`~observer.model.state.DEFAULTS` value; string values are interned,
  so the 100,000 ``"worker"`` are one string;
* an edge's data is one of a few shared, read-only flag dicts
  (:func:`edge_flags`): ``{"sup": True, "link": True, "kind": "sup"}`` exists
  once, however many edges carry it; :func:`~observer.model.state.add_flag`
  replaces an edge's dict rather than changing it;
* :class:`ProcGraph` is a :class:`networkx.DiGraph` whose node records are
  :class:`Proc`: networkx stays the structure (adjacency, order, removal).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import Any

import networkx as nx

__all__ = ["DEFAULTS", "FIELDS", "Flags", "Proc", "ProcGraph", "edge_flags"]

FIELDS = (
    "pid",
    "name",
    "label",
    "kind",
    "status",
    "supervisor",
    "parent",
    "child_id",
    "restarts",
    "mailbox",
    "msgs_in",
    "msgs_out",
    "handled",
    "handler_time",
    "trap_exit",
    "started_at",
    "budget",
    "memory",
    "rate",
)
"""The fields every record has (the keys of :data:`DEFAULTS`, in that order)."""

DEFAULTS: dict[str, Any] = {
    "pid": None,
    "name": None,
    "label": None,
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
    "trap_exit": None,
    "started_at": None,
    "budget": None,
    "memory": None,
    "rate": 0.0,
}
"""Every process record has these keys (a snapshot's record or a spawn event fills them in)."""
_FIELDSET = frozenset(FIELDS)
_intern = sys.intern
_ZERO = 0.0


class Proc:
    """One process record: a slotted mutable mapping over :data:`FIELDS` (plus rare extra keys)."""

    __slots__ = (*FIELDS, "_extra")
    _extra: dict[str, Any] | None

    def __getattr__(self, k: str) -> Any:  # a slot never set: its default
        try:
            return DEFAULTS[k]
        except KeyError:
            if k == "_extra":
                return None
            raise AttributeError(k) from None

    # -- reading --------------------------------------------------------------------------------

    def __getitem__(self, k: str) -> Any:
        if k in _FIELDSET:
            return getattr(self, k)
        ex = self._extra
        if ex is None:
            raise KeyError(k)
        return ex[k]

    def get(self, k: str, default: Any = None) -> Any:
        if k in _FIELDSET:
            return getattr(self, k)
        ex = self._extra
        return default if ex is None else ex.get(k, default)

    def __contains__(self, k: object) -> bool:
        if k in _FIELDSET:
            return True
        ex = self._extra
        return ex is not None and k in ex

    def __iter__(self) -> Iterator[str]:
        yield from FIELDS
        ex = self._extra
        if ex:
            yield from ex

    def __len__(self) -> int:
        ex = self._extra
        return len(FIELDS) + (len(ex) if ex else 0)

    def keys(self) -> list[str]:
        ex = self._extra
        return [*FIELDS, *ex] if ex else list(FIELDS)

    def items(self) -> list[tuple[str, Any]]:
        out = [(k, getattr(self, k)) for k in FIELDS]
        ex = self._extra
        if ex:
            out.extend(ex.items())
        return out

    def values(self) -> list[Any]:
        return [v for _, v in self.items()]

    def copy(self) -> dict[str, Any]:
        return dict(self.items())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Proc | Mapping):
            return dict(self.items()) == dict(other.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Proc({dict(self.items())!r})"

    # -- writing --------------------------------------------------------------------------------

    def __setitem__(self, k: str, v: Any) -> None:
        if v.__class__ is str:
            v = _intern(v)
        elif v.__class__ is float and v == 0.0:
            v = _ZERO
        if k in _FIELDSET:
            setattr(self, k, v)
            return
        ex = self._extra
        if ex is None:
            ex = self._extra = {}
        ex[k] = v

    def update(self, other: Mapping[str, Any] | Iterable[tuple[str, Any]] = (), **kw: Any) -> None:
        items = other.items() if isinstance(other, Mapping | Proc) else other
        for k, v in items:
            self[k] = v
        for k, v in kw.items():
            self[k] = v

    def setdefault(self, k: str, default: Any = None) -> Any:
        if k not in self:
            self[k] = default
        return self[k]

    def pop(self, k: str, *default: Any) -> Any:
        if k in _FIELDSET:
            v = getattr(self, k)
            try:
                delattr(self, k)  # back to the default
            except AttributeError:
                pass
            return v
        ex = self._extra
        if ex is None or k not in ex:
            if default:
                return default[0]
            raise KeyError(k)
        return ex.pop(k)

    def __delitem__(self, k: str) -> None:
        if k not in self:
            raise KeyError(k)
        self.pop(k)


MutableMapping.register(Proc)


class Flags(dict[str, Any]):
    """An edge's flags: shared by every edge with the same ones, so read-only."""

    __slots__ = ()

    def _frozen(self, *a: Any, **kw: Any) -> None:
        raise TypeError("edge flags are shared and read-only: use add_flag/remove_flag")

    __setitem__ = __delitem__ = update = pop = popitem = clear = setdefault = _frozen  # type: ignore[assignment]


@functools.lru_cache(maxsize=256)
def edge_flags(sup: bool, link: bool, monitor: int) -> Flags:
    """The shared flag dict for these relations (``kind``: the strongest of them)."""
    d: dict[str, Any] = {}
    if sup:
        d["sup"] = True
    if link:
        d["link"] = True
    if monitor:
        d["monitor"] = monitor
    d["kind"] = "sup" if sup else "link" if link else "monitor" if monitor else None
    return Flags(d)


class ProcGraph(nx.DiGraph):
    """A :class:`networkx.DiGraph` whose node records are :class:`Proc`."""

    node_attr_dict_factory = Proc
