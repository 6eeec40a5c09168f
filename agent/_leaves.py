"""The leaves of one serialization walk, and reading objects without running their code.

:class:`Leaves` holds one walk's budgets (size, time, the caps) and encodes
the values that end a branch: numbers, strings (clipped and made
UTF-8-safe), bytes, exceptions, ``repr`` texts, and dict keys (stringified,
asking the scrub whether each names a secret).  The walk itself (dispatch,
depth, cycles, containers) is :class:`agent._serialize._Walk`, which sets the
fields declared here.  The module functions read a class or an instance the
way a debugger would (see "Reading attributes" in :mod:`agent._serialize`).
"""

from __future__ import annotations

import enum
import itertools
import json
import json.encoder
import math
import time
import types
from collections.abc import Callable
from typing import Any, Final

__all__ = [
    "FATAL",
    "MISSING",
    "Leaves",
    "defines",
    "instance_dict",
    "slot_names",
    "static_lookup",
    "type_name",
    "utf8_safe",
]

FATAL: Final = (KeyboardInterrupt, SystemExit)
"""Never caught: re-raised wherever user code may run."""
MISSING: Final = object()
"""What :func:`static_lookup` returns for a name no class in the MRO defines."""
_BIG_INT_BITS: Final = 1024
_json_str: Callable[[str], str] = json.encoder.encode_basestring_ascii


def type_name(cls: type) -> str:
    """The class's ``__qualname__`` without any ``f.<locals>.`` prefix."""
    try:
        name = type.__getattribute__(cls, "__qualname__")
        if isinstance(name, str):
            return str.__getitem__(name.rpartition("<locals>.")[2], slice(0, 200))
    except FATAL:
        raise
    except BaseException:
        pass
    return "?"


def static_lookup(cls: type, name: str) -> Any:
    """Look ``name`` up in the class dicts along the MRO, running no user code."""
    for klass in type.__getattribute__(cls, "__mro__"):
        ns = type.__getattribute__(klass, "__dict__")
        if name in ns:
            return ns[name]
    return MISSING


def defines(cls: type, name: str) -> bool:
    """True if the class (or a base) sets ``name`` to something other than None."""
    found = static_lookup(cls, name)
    return found is not MISSING and found is not None


def instance_dict(v: Any, cls: type) -> dict[str, Any] | None:
    """The instance's own ``__dict__``, via the type's C descriptor (a ``__dict__``
    property defined by the class is not called); None if it has none."""
    for klass in type.__getattribute__(cls, "__mro__"):
        found = type.__getattribute__(klass, "__dict__").get("__dict__")
        if type(found) is types.GetSetDescriptorType:
            try:
                inst = found.__get__(v, cls)
            except FATAL:
                raise
            except BaseException:
                return None
            return inst if type(inst) is dict else None
    return None


def slot_names(cls: type) -> list[str]:
    """Instance attribute names declared by ``__slots__`` along the MRO (mangled)."""
    names: list[str] = []
    for klass in type.__getattribute__(cls, "__mro__"):
        ns = type.__getattribute__(klass, "__dict__")
        slots = ns.get("__slots__", ())
        if isinstance(slots, str):
            slots = (slots,)
        try:
            declared = list(itertools.islice(iter(slots), 1000))
        except FATAL:
            raise
        except BaseException:
            continue
        for slot in declared:
            if not isinstance(slot, str) or slot in ("__dict__", "__weakref__"):
                continue
            if slot.startswith("__") and not slot.endswith("__"):
                slot = "_" + type.__getattribute__(klass, "__name__").lstrip("_") + slot
            if slot not in names:
                names.append(slot)
    return names


def utf8_safe(s: str) -> str:
    if s.isascii():
        return s
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "backslashreplace").decode("utf-8")


class Leaves:
    """One walk's budgets and its leaf encoders (the walk sets these fields)."""

    max_items: int
    max_string: int
    limit: int
    """Bytes of JSON the walk may produce before it stops (``max_bytes`` less a margin)."""
    deadline: float
    size: int
    truncated: bool
    masked: int
    stopped: bool
    mask: str
    secret: Callable[[str], bool]
    reprs: dict[int, tuple[Any, str]]

    # -- budgets

    def stop(self) -> None:
        self.stopped = True
        self.truncated = True

    def halted(self) -> bool:
        """True once any budget is exhausted (checks the clock)."""
        if self.stopped:
            return True
        if time.monotonic() > self.deadline or self.size > self.limit:
            self.stop()
            return True
        return False

    def charge(self, n: int) -> None:
        self.size += n

    def marker(self, text: str) -> str:
        """A short marker string, always emitted (charged, never cut)."""
        self.size += len(text) + 4
        return text

    # -- scalars

    def int_(self, v: int) -> Any:
        bits = v.bit_length()
        if bits > _BIG_INT_BITS:
            return self.wrap(int, bits=self.int_(bits), negative=self.bool_(v < 0))
        self.charge(bits * 30103 // 100000 + 2)
        return v

    def bool_(self, v: bool) -> bool:
        self.charge(5)
        return v

    def float_(self, v: float) -> Any:
        if math.isfinite(v):
            self.charge(len(float.__repr__(v)))
            return v
        if math.isnan(v):
            return self.marker("NaN")
        return self.marker("Infinity" if v > 0 else "-Infinity")

    def str_(self, s: str) -> str:
        """Clip, sanitise and charge one string (``s`` may be a str subclass)."""
        total = str.__len__(s)
        if type(s) is str and total <= self.max_string and s.isascii():
            cost = len(_json_str(s))
            if self.size + cost + 24 <= self.limit:
                self.size += cost
                return s
        keep = min(total, self.max_string)
        text = utf8_safe(str.__getitem__(s, slice(0, keep)))
        cost = len(_json_str(text))
        room = self.limit - self.size
        if cost + 24 > room:
            # cut to what the byte budget still allows, then stop
            self.stop()
            if room < 48:
                return self.marker("<...>")
            keep = min(keep, room - 40)
            text = utf8_safe(str.__getitem__(s, slice(0, keep)))
            while keep > 0 and len(_json_str(text)) > room - 40:
                keep //= 2
                text = utf8_safe(str.__getitem__(s, slice(0, keep)))
            cost = len(_json_str(text))
        if keep < total:
            self.truncated = True
            text += f"...<+{total - keep} chars>"
            cost += 20
        self.charge(cost)
        return text

    def masked_value(self) -> str:
        self.masked += 1
        return self.marker(self.mask)

    def wrap(self, cls: type, **fields: Any) -> dict[str, Any]:
        name = type_name(cls)
        self.charge(16 + len(name) + sum(len(k) + 6 for k in fields))
        out: dict[str, Any] = {"__type__": name}
        out.update(fields)
        return out

    def bytes_(self, v: Any, cls: type) -> Any:
        cap = min(256, max(0, self.max_string - 3) // 4)
        head: bytes | None
        if issubclass(cls, memoryview):
            total = memoryview.__getattribute__(v, "nbytes")
            try:
                head = v.cast("B")[:cap].tobytes()
            except FATAL:
                raise
            except BaseException:
                head = None
        elif issubclass(cls, bytes):
            total = bytes.__len__(v)
            head = bytes(bytes.__getitem__(v, slice(0, cap)))
        else:
            total = bytearray.__len__(v)
            head = bytes(bytearray.__getitem__(v, slice(0, cap)))
        if head is None or len(head) < total:
            self.truncated = True
        fields: dict[str, Any] = {"len": self.int_(total)}
        if head is not None:
            fields["preview"] = self.str_(repr(head))
        return self.wrap(cls, **fields)

    def exception_(self, v: BaseException, cls: type) -> Any:
        try:
            message: str = str(v)
        except FATAL:
            raise
        except BaseException as exc:
            message = f"<str failed: {type_name(type(exc))}>"
        return self.wrap(cls, message=self.str_(message))

    def repr_(self, v: Any, cls: type) -> Any:
        cached = self.reprs.get(id(v))
        if cached is not None and cached[0] is v:
            text = cached[1]
        else:
            try:
                text = repr(v)
                if not issubclass(type(text), str):  # pragma: no cover - repr() enforces str
                    text = "<bad repr>"
            except FATAL:
                raise
            except BaseException as exc:
                text = f"<{type_name(cls)} object (repr failed: {type_name(type(exc))})>"
            self.reprs[id(v)] = (v, text)
        return self.wrap(cls, repr=self.str_(text))

    # -- keys

    def key(self, k: Any, depth: int = 0) -> tuple[str, bool]:
        """Stringify a dict key; return it and whether it names a secret."""
        cls = type(k)
        if issubclass(cls, str):
            text = str.__getitem__(k, slice(0, self.max_string))
            if str.__len__(k) > self.max_string:
                self.truncated = True
                text += "..."
            return utf8_safe(text), self.secret(text)
        if k is None or cls is bool:
            return repr(k), False
        if issubclass(cls, enum.Enum):
            name = object.__getattribute__(k, "_name_")
            if isinstance(name, str):
                return f"{type_name(cls)}.{name}", self.secret(name)
        if issubclass(cls, int):
            value = int.__pos__(k)
            if value.bit_length() > _BIG_INT_BITS:
                return f"<int of {value.bit_length()} bits>", False
            return int.__repr__(value), False
        if issubclass(cls, float):
            return float.__repr__(float.__pos__(k)), False
        if issubclass(cls, bytes):
            head = bytes(bytes.__getitem__(k, slice(0, self.max_string // 4)))
            return repr(head), self.secret(head.decode("latin-1"))
        if issubclass(cls, (tuple, frozenset)) and depth < 3:
            elems = list(itertools.islice(tuple.__iter__(k) if issubclass(cls, tuple) else frozenset.__iter__(k), 10))
            inner = ", ".join(
                str.__repr__(self.key(e, depth + 1)[0]) if issubclass(type(e), str) else self.key(e, depth + 1)[0]
                for e in elems
            )
            total = tuple.__len__(k) if issubclass(cls, tuple) else frozenset.__len__(k)
            if total > len(elems):
                inner += ", ..."
            text = f"({inner})" if issubclass(cls, tuple) else f"{{{inner}}}"
            return utf8_safe(text[: self.max_string]), False
        shown = self.repr_(k, cls)
        return str(shown.get("repr", "?")) if isinstance(shown, dict) else "?", False
