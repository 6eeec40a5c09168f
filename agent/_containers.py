"""Containers and objects in one serialization walk: depth, cycles, and bounded snapshots.

:class:`Containers` encodes what has items or fields (lists, dicts, tuples,
sets, deques, named tuples, dataclasses, mappings, other iterables, objects
read through ``__dict__`` / ``__slots__``, ``__observer_fields__`` results):
it snapshots a bounded prefix (in C for built-in types), masks values by key
through the scrub, and hands each item back to the walk's dispatch
(:meth:`enc`, defined by :class:`agent._serialize._Walk`) one level down.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import json.encoder
from collections.abc import Callable, Iterator, Mapping, MappingView, Sequence, Set
from typing import Any, Final

from ._leaves import FATAL, MISSING, Leaves, defines, instance_dict, slot_names, static_lookup, type_name

__all__ = ["Containers"]

_MAX_NAME: Final = 256  # an ASCII str key this short takes the fast path in ``pairs``
_json_str: Callable[[str], str] = json.encoder.encode_basestring_ascii


def _more(n: int | None) -> str:
    return f"<+{n} more>" if n is not None else "<more>"


class Containers(Leaves):
    """The container half of a walk (the walk sets the fields declared here
    and in :class:`~agent._leaves.Leaves`)."""

    max_depth: int
    path: set[int]
    """Ids of the containers being encoded, outermost first: a cycle's marker."""

    def enc(self, v: Any, depth: int) -> Any:
        """Encode one value (the walk's dispatch, :meth:`agent._serialize._Walk.enc`)."""
        raise NotImplementedError

    def nested(self, v: Any, cls: type, depth: int) -> Any:
        """Containers and objects: depth and cycle checks apply."""
        if depth >= self.max_depth:
            self.truncated = True
            return self.marker(f"<{self.describe(v, cls)} (max depth)>")
        key = id(v)
        if key in self.path:
            return self.marker("<cycle>")
        self.path.add(key)
        try:
            return self.container(v, cls, depth)
        finally:
            self.path.discard(key)

    def describe(self, v: Any, cls: type) -> str:
        name = type_name(cls)
        for base, length in ((dict, dict.__len__), (list, list.__len__), (tuple, tuple.__len__)):
            if issubclass(cls, base):
                return f"{name} of {length(v)}"
        if issubclass(cls, (set, frozenset)):
            return f"{name} of {len(v)}" if cls in (set, frozenset) else name
        return name

    def container(self, v: Any, cls: type, depth: int) -> Any:
        n = self.max_items
        if cls is list:
            return self.items(list.__getitem__(v, slice(0, n)), list.__len__(v), depth)
        if issubclass(cls, dict):
            snap = list(itertools.islice(dict.items(v), n))
            out = self.pairs(iter(snap), dict.__len__(v), depth)
            if cls is dict and "__type__" not in out:
                return out
            return self.wrap(cls, items=out)
        if issubclass(cls, tuple):
            fields = static_lookup(cls, "_fields")
            if cls is not tuple and type(fields) is tuple and all(type(f) is str for f in fields):
                snap_t = tuple.__getitem__(v, slice(0, n))
                named = zip(fields, snap_t, strict=False)
                return self.wrap(cls, fields=self.pairs(named, tuple.__len__(v), depth))
            total = tuple.__len__(v)
            if total == 2:
                first = tuple.__getitem__(v, 0)
                if issubclass(type(first), str) and self.secret(first):
                    pair = [self.enc(first, depth + 1), self.masked_value()]
                    return self.wrap(cls, items=pair)
            return self.wrap(cls, items=self.items(tuple.__getitem__(v, slice(0, n)), total, depth))
        if issubclass(cls, list):
            return self.wrap(cls, items=self.items(list.__getitem__(v, slice(0, n)), list.__len__(v), depth))
        if issubclass(cls, (set, frozenset)):
            base_iter = set.__iter__ if issubclass(cls, set) else frozenset.__iter__
            base_len = set.__len__ if issubclass(cls, set) else frozenset.__len__
            snap_s = list(itertools.islice(base_iter(v), n))
            return self.wrap(cls, items=self.items(snap_s, base_len(v), depth))
        if issubclass(cls, collections.deque):
            snap_d = list(itertools.islice(collections.deque.__iter__(v), n))
            return self.wrap(cls, items=self.items(snap_d, collections.deque.__len__(v), depth))
        if static_lookup(cls, "__dataclass_fields__") is not MISSING:
            return self.dataclass_(v, cls, depth)
        if issubclass(cls, Mapping):
            return self.mapping_(v, cls, depth)
        if issubclass(cls, (Sequence, Set, MappingView)) or (defines(cls, "__iter__") and not defines(cls, "__next__")):
            return self.iterable_(v, cls, depth)
        return self.object_(v, cls, depth)

    # -- containers

    def items(self, snap: list[Any] | tuple[Any, ...], total: int | None, depth: int) -> list[Any]:
        """Encode an already-bounded snapshot of a sequence's items."""
        out: list[Any] = []
        self.charge(2)
        for x in snap:
            if self.halted():
                break
            out.append(self.enc(x, depth + 1))
            self.charge(2)
        self.close_items(out, total)
        return out

    def close_items(self, out: list[Any], total: int | None) -> None:
        if total is not None and len(out) >= total:
            return
        self.truncated = True
        out.append(self.marker(_more(None if total is None else total - len(out))))

    def pairs(self, it: Iterator[tuple[Any, Any]], total: int | None, depth: int) -> dict[str, Any]:
        """Encode (key, value) pairs into a dict, masking by key.  ``it`` may run user code."""
        out: dict[str, Any] = {}
        self.charge(2)
        count = 0
        exhausted = False
        while True:
            if self.halted():
                break
            if count >= self.max_items:
                self.truncated = True
                break
            try:
                k, value = next(it)
            except StopIteration:
                exhausted = True
                break
            except FATAL:
                raise
            except BaseException as exc:
                out[self.unique(out, "<error>")] = self.marker(f"<error: {type_name(type(exc))}>")
                exhausted = True
                break
            count += 1
            if type(k) is str and len(k) <= _MAX_NAME and k.isascii():
                skey, secret = k, self.secret(k)
            else:
                try:
                    skey, secret = self.key(k)
                except FATAL:
                    raise
                except BaseException as exc:
                    skey, secret = f"<key error: {type_name(type(exc))}>", True
            skey = self.unique(out, skey)
            self.charge(len(_json_str(skey)) + 4)
            out[skey] = self.masked_value() if secret else self.enc(value, depth + 1)
        if not exhausted and (total is None or count < total):
            self.truncated = True
            out[self.unique(out, "<truncated>")] = self.marker(_more(None if total is None else total - count))
        return out

    @staticmethod
    def unique(out: dict[str, Any], key: str) -> str:
        if key not in out:
            return key
        i = 2
        while f"{key} #{i}" in out:
            i += 1
        return f"{key} #{i}"

    def safe_len(self, v: Any, cls: type) -> int | None:
        if static_lookup(cls, "__len__") is MISSING:
            return None
        try:
            n = len(v)
        except FATAL:
            raise
        except BaseException:
            return None
        return n if n >= 0 else None

    def mapping_(self, v: Any, cls: type, depth: int) -> Any:
        total = self.safe_len(v, cls)
        try:
            it: Iterator[tuple[Any, Any]] = iter(v.items())
        except FATAL:
            raise
        except BaseException as exc:
            return self.wrap(cls, error=self.marker(f"<error: {type_name(type(exc))}>"))
        return self.wrap(cls, items=self.pairs(it, total, depth))

    def iterable_(self, v: Any, cls: type, depth: int) -> Any:
        if cls is range:  # pragma: no cover - handled as a repr type
            return self.repr_(v, cls)
        total = self.safe_len(v, cls)
        out: list[Any] = []
        self.charge(2)
        try:
            it = iter(v)
        except FATAL:
            raise
        except BaseException as exc:
            out.append(self.marker(f"<error: {type_name(type(exc))}>"))
            return self.wrap(cls, items=out)
        complete = False
        while not self.halted():
            if len(out) >= self.max_items:
                complete = total is not None and len(out) >= total
                break
            try:
                x = next(it)
            except StopIteration:
                complete = True
                break
            except FATAL:
                raise
            except BaseException as exc:
                out.append(self.marker(f"<error: {type_name(type(exc))}>"))
                return self.wrap(cls, items=out)
            out.append(self.enc(x, depth + 1))
            self.charge(2)
        if not complete:
            self.truncated = True
            out.append(self.marker(_more(None if total is None else max(0, total - len(out)))))
        return self.wrap(cls, items=out)

    def dataclass_(self, v: Any, cls: type, depth: int) -> Any:
        names = [f.name for f in dataclasses.fields(cls)]
        return self.wrap(cls, fields=self.pairs(self.attrs(v, names), len(names), depth))

    @staticmethod
    def attrs(v: Any, names: list[str]) -> Iterator[tuple[str, Any]]:
        """(name, value) for each readable attribute; unset ones are skipped."""
        for name in names:
            try:
                value = object.__getattribute__(v, name)
            except AttributeError:
                continue
            except FATAL:
                raise
            except BaseException as exc:  # a property or descriptor that raises
                value = f"<error: {type_name(type(exc))}>"
            yield name, value

    def object_(self, v: Any, cls: type, depth: int) -> Any:
        inst_dict = instance_dict(v, cls)
        slots = slot_names(cls)
        if inst_dict is None:
            own_repr = static_lookup(cls, "__repr__")
            if not slots or own_repr is not object.__repr__:
                return self.repr_(v, cls)
        snap: list[tuple[Any, Any]] = list(self.attrs(v, slots))
        total = len(snap)
        if inst_dict is not None:
            snap.extend(itertools.islice(dict.items(inst_dict), self.max_items))
            total += dict.__len__(inst_dict)
        return self.wrap(cls, fields=self.pairs(iter(snap), total, depth))

    def custom(self, v: Any, cls: type, fields: Callable[[Any], Any], depth: int) -> Any:
        if depth >= self.max_depth:
            self.truncated = True
            return self.marker(f"<{type_name(cls)} (max depth)>")
        key = id(v)
        if key in self.path:
            return self.marker("<cycle>")
        self.path.add(key)
        try:
            try:
                result = fields(v)
            except FATAL:
                raise
            except BaseException as exc:
                return self.wrap(cls, error=self.marker(f"<fields failed: {type_name(type(exc))}>"))
            rcls = type(result)
            if issubclass(rcls, dict):
                snap = list(itertools.islice(dict.items(result), self.max_items))
                return self.wrap(cls, fields=self.pairs(iter(snap), dict.__len__(result), depth))
            if issubclass(rcls, Mapping):
                total = self.safe_len(result, rcls)
                return self.wrap(cls, fields=self.pairs(iter(result.items()), total, depth))
            return self.wrap(cls, fields=self.enc(result, depth + 1))
        finally:
            self.path.discard(key)
