"""The JSON Schema of the wire protocol, generated from :mod:`agent.messages`
and :mod:`agent.command_shapes`.

    python -m agent.schema > docs/protocol.schema.json

The committed file is checked against this output by the tests (so it cannot
drift from the code) and real frames of every kind are validated against it.
The conversion covers the types the message shapes use: ``str``, ``int``,
``float``, ``bool``, ``None``, ``Any``, ``Literal``, unions, ``list``,
``dict[str, T]``, TypedDicts (an object with exactly its keys) and
``Annotated[T, Schema(...)]`` (extra keywords; ``name=`` makes it a shared
definition). Anything else raises ``TypeError``: extend this module first.
(Our own converter: the agent uses the standard library only.)
"""

from __future__ import annotations

import json
import sys
import types
import typing
from typing import Annotated, Any, Literal, Union

from . import command_shapes as C
from . import messages as M
from . import protocol as P

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_SIMPLE: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}


class _Builder:
    def __init__(self) -> None:
        self.defs: dict[str, dict[str, Any]] = {}
        self._events = {id(shape) for shape in M.EVENTS.values()}

    def ref(self, name: str) -> dict[str, Any]:
        return {"$ref": f"#/$defs/{name}"}

    def of(self, tp: Any) -> dict[str, Any]:
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if tp is Any:
            return {}
        if tp in _SIMPLE:
            return {"type": _SIMPLE[tp]}
        if origin is Annotated:
            return self._annotated(args[0], [m for m in tp.__metadata__ if isinstance(m, M.Schema)])
        if origin is Literal:
            return {"const": args[0]} if len(args) == 1 else {"enum": list(args)}
        if origin is Union or origin is types.UnionType:
            return self._union([self.of(a) for a in args])
        if origin is list:
            return {"type": "array", "items": self.of(args[0])}
        if origin is dict:
            if args[0] is not str:
                raise TypeError(f"JSON object keys are strings, not {args[0]!r}")
            return {"type": "object", "additionalProperties": self.of(args[1])}
        if typing.is_typeddict(tp):
            return self._object(tp)
        raise TypeError(f"no JSON Schema for {tp!r}: extend agent/schema.py")

    def _annotated(self, base: Any, metas: list[M.Schema]) -> dict[str, Any]:
        out = self.of(base)
        name = None
        for meta in metas:
            kw = dict(meta.keywords)
            name = kw.pop("name", name)
            out.update(kw)
        if name is None:
            return out
        self.defs[name] = out
        return self.ref(name)

    def _union(self, parts: list[dict[str, Any]]) -> dict[str, Any]:
        # {"type": "string"} | {"type": "null"} reads better as {"type": ["string", "null"]}
        if all(set(p) == {"type"} and isinstance(p["type"], str) for p in parts):
            return {"type": [p["type"] for p in parts]}
        return {"anyOf": parts}

    def _object(self, shape: type) -> dict[str, Any]:
        name = shape.__name__
        if shape is M.CommandMsg and name not in self.defs:
            self.defs[name] = self._commands()
        if name not in self.defs:
            self.defs[name] = {}  # a placeholder while its fields are built
            props: dict[str, Any] = {}
            required: list[str] = []
            fields = M.fields(shape)
            if id(shape) in self._events:  # an event frame: the header, then the body
                fields = {**M.fields(M.EventHeader), **fields}
            for key, (tp, req) in fields.items():
                props[key] = self.of(tp)
                if req:
                    required.append(key)
            body: dict[str, Any] = {"type": "object"}
            doc = (shape.__doc__ or "").strip()
            if doc and not doc.startswith(f"{name}("):  # TypedDict's own default docstring
                body["description"] = " ".join(doc.split())
            body |= {"properties": props, "required": required, "additionalProperties": False}
            self.defs[name] = body
        return self.ref(name)

    def _commands(self) -> dict[str, Any]:
        """``cmd`` frames: one variant per command, each with its own ``args``
        (:data:`command_shapes.COMMAND_ARGS`; ``CommandMsg`` itself says ``args`` is
        an object, for the Python side)."""
        fields = M.fields(M.CommandMsg)
        variants = []
        for cmd, args in C.COMMAND_ARGS.items():
            props = {key: self.of(tp) for key, (tp, _) in fields.items()}
            props["cmd"] = {"const": cmd}
            props["args"] = self.of(args)
            variants.append(
                {
                    "type": "object",
                    "properties": props,
                    "required": [k for k, (_, req) in fields.items() if req],
                    "additionalProperties": False,
                }
            )
        doc = " ".join((M.CommandMsg.__doc__ or "").split())
        return {"description": doc, "anyOf": variants}


def schema() -> dict[str, Any]:
    """The whole protocol as one JSON Schema (draft 2020-12): a frame is one of
    ``AgentFrame`` (agent -> observer) or ``ObserverFrame`` (observer -> agent)."""
    b = _Builder()
    agent_refs = [b.of(shape) for shapes in M.AGENT_FRAMES.values() for shape in shapes]
    observer_refs = [b.of(shape) for shapes in M.OBSERVER_FRAMES.values() for shape in shapes]
    results = [b.of(shape) for shape in C.COMMAND_RESULTS.values()]
    defs = dict(sorted(b.defs.items()))
    defs["AgentFrame"] = {"description": "A frame the agent sends.", "anyOf": agent_refs}
    defs["ObserverFrame"] = {"description": "A frame the observer sends.", "anyOf": observer_refs}
    defs["CommandResult"] = {
        "description": (
            "The result of a ReplyOk: that of the command its id was sent with (command_shapes.COMMAND_RESULTS)."
        ),
        "anyOf": results,
    }
    return {
        "$schema": SCHEMA_DIALECT,
        "title": f"{P.PROTOCOL} wire protocol, version {P.VERSION}",
        "description": (
            "Each frame is a 4-byte big-endian length and that many bytes of UTF-8 JSON: one of these objects. "
            "Generated from agent/messages.py and agent/command_shapes.py by `python -m agent.schema`; "
            "docs/protocol.md explains it."
        ),
        "anyOf": [b.ref("AgentFrame"), b.ref("ObserverFrame")],
        "$defs": defs,
    }


def render() -> str:
    """:func:`schema` as the text of ``docs/protocol.schema.json``."""
    return json.dumps(schema(), indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
