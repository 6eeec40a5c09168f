"""Bounded, never-raising serialization of arbitrary values to JSON-able data.

The agent uses this (through :class:`agent._redact.Redactor`) to show a process's state,
mailbox and crash values to observers.  The actor system must never pay for the observer's trouble, so
:meth:`Serializer.encode`:

* **never raises** (apart from ``KeyboardInterrupt`` / ``SystemExit``, which are always
  re-raised): every step that may run user code (``__repr__``, ``__str__``, ``__len__``,
  ``__iter__``, ``items()``, custom field extractors) is guarded, and a failure becomes a
  marker string such as ``"<error: ValueError>"`` in place of that one value;
* is **bounded in size**: ``max_depth`` levels, ``max_items`` entries per container,
  ``max_string`` characters per string, and about ``max_bytes`` of JSON in total
  (``len(json.dumps(data))`` stays within ``max_bytes`` plus a few hundred bytes of
  closing markers);
* is **bounded in time**: the wall clock is checked before every value and every
  container item; past ``time_budget_s`` the walk stops and marks the result truncated.
  A *single* user call that blocks (a ``__repr__`` that sleeps) cannot be interrupted;
  the checks bound everything between such calls;
* **never copies big values**: strings and bytes are measured with ``len`` and sliced
  before anything else; built-in containers are never ``repr``'d; a bounded prefix of a
  built-in container is snapshotted in C (which also makes a concurrent mutation from
  the host's loop harmless); iterators and generators are never advanced;
* calls a user ``__repr__`` at most once per object per encode, and clips its result.

Output conventions (``Encoded.data``)
-------------------------------------
* ``None``, ``bool``, ``int``, finite ``float`` and ``str`` map to themselves (subclasses
  to their base value).  ``nan``/``inf``/``-inf`` become the strings ``"NaN"``,
  ``"Infinity"``, ``"-Infinity"``.  Ints over 1024 bits become
  ``{"__type__": "int", "bits": n, "negative": bool}``.
* Strings longer than ``max_string`` are cut, with ``"...<+N chars>"`` appended.  Strings
  are made UTF-8-encodable (lone surrogates become ``\\udc80``-style escapes).
* A ``list`` is a JSON list; an exact ``dict`` is a JSON object (keys stringified; if
  two keys stringify alike the later gets a ``" #2"`` suffix).
* Every other non-scalar is an object carrying ``"__type__"`` (the class's qualified
  name) plus one of these shapes:

  - ``{"__type__": "tuple", "items": [...]}`` — tuple, set, frozenset, deque, list
    subclasses, other sequences and iterables (a class with ``__iter__`` but no
    ``__next__``);
  - ``{"__type__": "OrderedDict", "items": {...}}`` — dict subclasses and other
    mappings; also a plain dict that has a ``"__type__"`` key of its own;
  - ``{"__type__": "Point", "fields": {...}}`` — dataclasses, named tuples, objects with
    ``__dict__`` and/or ``__slots__``, and ``__observer_fields__`` / registered
    extractors;
  - ``{"__type__": "bytes", "len": n, "preview": "b'...'"}`` — bytes, bytearray,
    memoryview (the preview covers at most ``max_string // 4`` bytes);
  - ``{"__type__": "Color", "name": "RED", "value": 1}`` — enums;
  - ``{"__type__": "datetime", "iso": "..."}`` (also ``date``, ``time``),
    ``{"__type__": "timedelta", "seconds": 1.5}``, ``{"__type__": "Decimal", "value": "1.10"}``;
  - ``{"__type__": "ValueError", "message": "..."}`` — exceptions;
  - ``{"__type__": "Pid", "repr": "<0.42.0>"}`` — everything shown by a (safe, clipped)
    ``repr``: functions, methods, classes, modules, coroutines, generators, frames,
    ``range``, ``complex``, awaitables (futures, tasks: never iterated), objects whose
    class has ``__slots__``, no ``__dict__`` and its
    own ``__repr__`` (the actors' ``Pid`` / ``Ref``, ``uuid.UUID``, ``pathlib.Path``...),
    and anything else with neither ``__dict__`` nor ``__slots__``.

* A container cut short ends with a marker: a list/items gets a last element
  ``"<+N more>"`` (or ``"<more>"`` when the length is unknown), a dict/fields/items object
  gets a last key ``"<truncated>"`` with the same kind of value.
* Other markers (plain strings): ``"<cycle>"``, ``"<list of 3 (max depth)>"``,
  ``"<Foo (hidden)>"``, ``"<error: ValueError>"``, ``"<...>"`` (budget exhausted).

Reading attributes
------------------
Objects are read the way a debugger would: the instance ``__dict__`` through the type's
C-level descriptor and ``__slots__`` / dataclass fields with ``object.__getattribute__``
(a class's own ``__getattribute__`` / ``__getattr__`` is not called; an attribute whose
property raises shows as ``"<error: ...>"``), dict subclasses and list/tuple/set subclasses are read
through the base type's C methods (overridden ``items``/``__iter__`` are not called).
Only genuinely custom containers (a class's own ``__iter__``/``__len__``, a non-dict
``Mapping``'s ``items()``) and ``repr``/``str`` run user code.

Opting out / customising
------------------------
* A class attribute ``__observer_inspect__ = False`` shows instances as
  ``"<ClassName (hidden)>"``.
* A method ``__observer_fields__(self) -> Mapping[str, Any]`` replaces the default
  attribute list (the mapping is still masked by key).
* :meth:`Serializer.register_type` overrides both, for a class and its subclasses (the
  nearest registered class in the MRO wins).

Masking
-------
What is secret is not decided here: a :class:`Scrub` (in the agent,
:class:`agent._scrub.Scrubber`) is plugged in and asked about every dict key, attribute
name and field name, and about the first element of a 2-tuple whose first element is a
string.  A secret's value is replaced by the scrub's ``mask`` without being looked at
(whatever its type), and counted in ``Encoded.masked``.  String *values* are not scanned.

Layout
------
One walk (:class:`_Walk`) per encode, in three parts: :mod:`agent._leaves` (the
budgets, leaf values and dict keys, reading objects without running their code),
:mod:`agent._containers` (containers and objects: snapshots, depth, cycles) and this
module (the dispatch by type, per-type rules and the :class:`Serializer` API).
"""

from __future__ import annotations

import datetime as _dt
import decimal
import enum
import functools
import json
import json.encoder
import time
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from ._containers import Containers
from ._leaves import (
    FATAL,
    MISSING,
    defines,
    static_lookup,
    type_name,
)

__all__ = [
    "Encoded",
    "Limits",
    "Scrub",
    "Serializer",
]

_json_str: Callable[[str], str] = json.encoder.encode_basestring_ascii

_REPR_TYPES: Final[tuple[type, ...]] = (
    type,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.MethodWrapperType,
    types.WrapperDescriptorType,
    types.MethodDescriptorType,
    types.ClassMethodDescriptorType,
    types.GetSetDescriptorType,
    types.MemberDescriptorType,
    types.ModuleType,
    types.CoroutineType,
    types.GeneratorType,
    types.AsyncGeneratorType,
    types.FrameType,
    types.TracebackType,
    types.CodeType,
    types.CellType,
    functools.partial,
    range,
    slice,
    complex,
    property,
    staticmethod,
    classmethod,
)


class Limits(Protocol):
    """How much to show (:class:`agent._scrub.RedactionPolicy` is one).

    Negative limits count as 0; ``max_depth`` is capped at 64.
    """

    @property
    def max_depth(self) -> int: ...
    @property
    def max_items(self) -> int: ...
    @property
    def max_string(self) -> int: ...
    @property
    def max_bytes(self) -> int: ...
    @property
    def time_budget_s(self) -> float: ...


class Scrub(Protocol):
    """What decides which names are secret (:class:`agent._scrub.Scrubber` is one)."""

    @property
    def mask(self) -> str:
        """What a secret value is replaced with."""
        ...

    def is_secret(self, name: str) -> bool:
        """True if the value under ``name`` must be masked."""
        ...


@dataclass(frozen=True)
class Encoded:
    """The result of :meth:`Serializer.encode`.

    ``data`` is JSON-able (``json.dumps(data)`` always succeeds, and the text is
    UTF-8-encodable); ``truncated`` is true when any cap (depth, items, string, bytes,
    time) was hit; ``masked`` counts masked values; ``size`` is ``len(json.dumps(data))``.
    """

    data: Any
    truncated: bool
    masked: int
    size: int


@dataclass(frozen=True)
class _Rule:
    inspect: bool | None
    fields: Callable[[Any], Any] | None


# --------------------------------------------------------------------------- the walk


class _Walk(Containers):
    """One encode: budgets, counters, the cycle path and the repr cache."""

    def __init__(self, serializer: Serializer) -> None:
        p = serializer.limits
        self.r = serializer
        self.p = p
        self.mask = serializer.scrub.mask
        self.secret = serializer.scrub.is_secret
        self.max_depth = min(max(0, int(p.max_depth)), 64)
        self.max_items = max(0, int(p.max_items))
        self.max_string = max(0, int(p.max_string))
        max_bytes = max(0, int(p.max_bytes))
        self.limit = max_bytes - min(256, max_bytes // 8)
        self.deadline = time.monotonic() + max(0.0, float(p.time_budget_s))
        self.size = 0
        self.truncated = False
        self.masked = 0
        self.stopped = False
        self.path: set[int] = set()
        self.reprs: dict[int, tuple[Any, str]] = {}
        self.no_rules = not serializer._registry

    # -- entry point

    def enc(self, v: Any, depth: int) -> Any:
        if self.halted():
            return self.marker("<...>")
        try:
            return self._enc(v, depth)
        except FATAL:
            raise
        except BaseException as exc:
            return self.marker(f"<error: {type_name(type(exc))}>")

    def _enc(self, v: Any, depth: int) -> Any:
        cls = type(v)
        if v is None:
            self.charge(4)
            return None
        if cls is bool:
            self.charge(5)
            return v
        if cls is int:
            return self.int_(v)
        if cls is float:
            return self.float_(v)
        if cls is str:
            return self.str_(v)
        if (cls is dict or cls is list) and self.no_rules:
            return self.nested(v, cls, depth)
        rule = self.r._rule_for(cls)
        if rule is not None:
            if rule.inspect is False:
                return self.marker(f"<{type_name(cls)} (hidden)>")
            if rule.fields is not None:
                return self.custom(v, cls, rule.fields, depth)
            return self.default(v, cls, depth, honor_class=False)
        return self.default(v, cls, depth, honor_class=True)

    def default(self, v: Any, cls: type, depth: int, *, honor_class: bool) -> Any:
        if honor_class:
            if static_lookup(cls, "__observer_inspect__") is False:
                return self.marker(f"<{type_name(cls)} (hidden)>")
            fn = static_lookup(cls, "__observer_fields__")
            if fn is not MISSING and fn is not None:
                get = getattr(type(fn), "__get__", None)
                bound = get(fn, v, cls) if get is not None else fn
                return self.custom(v, cls, lambda _o: bound(), depth)
        if issubclass(cls, enum.Enum):
            return self.enum_(v, cls, depth)
        if issubclass(cls, int):
            return self.int_(int.__pos__(v))
        if issubclass(cls, float):
            return self.float_(float.__pos__(v))
        if issubclass(cls, str):
            return self.str_(v)
        if issubclass(cls, (bytes, bytearray, memoryview)):
            return self.bytes_(v, cls)
        if issubclass(cls, _dt.date):  # datetime is a date
            fmt = _dt.datetime.isoformat if issubclass(cls, _dt.datetime) else _dt.date.isoformat
            return self.wrap(cls, iso=self.str_(fmt(v)))
        if issubclass(cls, _dt.time):
            return self.wrap(cls, iso=self.str_(_dt.time.isoformat(v)))
        if issubclass(cls, _dt.timedelta):
            return self.wrap(cls, seconds=self.float_(_dt.timedelta.total_seconds(v)))
        if issubclass(cls, decimal.Decimal):
            return self.wrap(cls, value=self.str_(decimal.Decimal.__str__(v)))
        if issubclass(cls, BaseException):
            return self.exception_(v, cls)
        if issubclass(cls, _REPR_TYPES) or defines(cls, "__await__"):  # never iterate a future
            return self.repr_(v, cls)
        return self.nested(v, cls, depth)

    def enum_(self, v: Any, cls: type, depth: int) -> Any:
        name = object.__getattribute__(v, "_name_")
        value = object.__getattribute__(v, "_value_")
        shown_name = self.str_(name) if isinstance(name, str) else self.enc(name, depth + 1)
        return self.wrap(cls, name=shown_name, value=self.enc(value, depth + 1))


class Serializer:
    """Encodes values within ``limits``, masking what ``scrub`` calls secret, with
    per-type rules (:meth:`register_type`).

    Thread-safe: ``encode`` may run on any thread; each call has its own state.
    """

    def __init__(self, limits: Limits, scrub: Scrub) -> None:
        self.limits = limits
        self.scrub = scrub
        self._registry: dict[type, _Rule] = {}

    def register_type(
        self,
        cls: type,
        *,
        inspect: bool | None = None,
        fields: Callable[[Any], Mapping[str, Any]] | None = None,
    ) -> None:
        """Set how instances of ``cls`` (and its subclasses) are shown.

        ``inspect=False``: only ``"<ClassName (hidden)>"``.  ``fields=f``: show
        ``f(obj)`` (a mapping, masked by key) as the object's fields.  ``inspect=True``:
        inspect normally even if the class opts out.  Both override the class's own
        ``__observer_inspect__`` / ``__observer_fields__``.  With neither argument, a
        previous registration for ``cls`` is removed.  Scalars (None, bool, int, float,
        str) cannot be registered.
        """
        registry = dict(self._registry)  # copy-on-write: encode() reads without a lock
        if inspect is None and fields is None:
            registry.pop(cls, None)
        else:
            registry[cls] = _Rule(inspect=inspect, fields=fields)
        self._registry = registry

    def _rule_for(self, cls: type) -> _Rule | None:
        registry = self._registry
        if not registry:
            return None
        for klass in type.__getattribute__(cls, "__mro__"):
            rule = registry.get(klass)
            if rule is not None:
                return rule
        return None

    def encode(self, value: Any) -> Encoded:
        """Encode ``value`` (see the module docstring).  Never raises."""
        try:
            return self._encode(value)
        except RecursionError:  # called with almost no stack left: nothing can be done
            return _NO_STACK

    def _encode(self, value: Any) -> Encoded:
        walk = _Walk(self)
        try:
            data = walk.enc(value, 0)
        except FATAL:
            raise
        except BaseException as exc:  # e.g. RecursionError at the very top
            data = f"<unencodable: {type_name(type(exc))}>"
        try:
            size = len(json.dumps(data))
        except FATAL:
            raise
        except BaseException:  # pragma: no cover - the walk only builds JSON-able data
            data, size = "<unencodable>", 14
            walk.truncated = True
        if size > max(0, walk.p.max_bytes) + 4096:  # pragma: no cover - accounting safety net
            data, size = "<too large>", 13
            walk.truncated = True
        return Encoded(data=data, truncated=walk.truncated, masked=walk.masked, size=size)


_NO_STACK: Final = Encoded(data="<unencodable: RecursionError>", truncated=True, masked=0, size=31)
