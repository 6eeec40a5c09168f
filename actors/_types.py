"""Identifiers, exit reasons and the system messages a process can receive."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

NORMAL = "normal"
"""Exit reason of a process that returned. Links ignore it unless trapping exits."""
SHUTDOWN = "shutdown"
"""Exit reason used by supervisors to stop a child in order."""
KILL = "kill"
"""Untrappable reason for :meth:`Node.exit`; the target dies with ``killed``."""
KILLED = "killed"
"""Exit reason of a process that was sent ``kill``."""
NOPROC = "noproc"
"""Reason delivered when linking to or monitoring a process that is not alive."""


def is_normal_shutdown(reason: Any) -> bool:
    """True for ``normal``, ``shutdown`` and ``("shutdown", term)``: the reasons a
    transient child is not restarted for."""
    if type(reason) is str:
        return reason in (NORMAL, SHUTDOWN)
    return isinstance(reason, tuple) and len(reason) == 2 and reason[0] == SHUTDOWN


class Pid:
    """A process identifier. Prints like Erlang's: ``<0.42.0>``.

    Pids are cheap values: equal if they name the same process, hashable, and
    they stay valid (pointing at nothing) after the process exits. Their text
    is made on first use and kept (an observed node prints each pid several
    times: its spawn, links, exit, crash report and restart).
    """

    __slots__ = ("node", "id", "creation", "_text")

    def __init__(self, node: int, id: int, creation: int = 0) -> None:
        self.node = node
        self.id = id
        self.creation = creation
        self._text: str | None = None

    def __repr__(self) -> str:
        text = self._text
        if text is None:
            text = self._text = f"<{self.node}.{self.id}.{self.creation}>"
        return text

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Pid)
            and other.id == self.id
            and other.node == self.node
            and other.creation == self.creation
        )

    def __hash__(self) -> int:
        return hash((self.node, self.id, self.creation))

    def __lt__(self, other: Pid) -> bool:
        return (self.node, self.creation, self.id) < (other.node, other.creation, other.id)

    @classmethod
    def parse(cls, text: str) -> Pid:
        """Parse ``"<0.42.0>"`` back into a pid; raises ``ValueError`` on bad text."""
        body = text.strip()
        if not (body.startswith("<") and body.endswith(">")):
            raise ValueError(f"not a pid: {text!r}")
        parts = body[1:-1].split(".")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise ValueError(f"not a pid: {text!r}")
        return cls(int(parts[0]), int(parts[1]), int(parts[2]))


class Ref:
    """A unique reference (monitors, calls). Prints like ``#Ref<0.7>``."""

    __slots__ = ("node", "id")

    def __init__(self, node: int, id: int) -> None:
        self.node = node
        self.id = id

    def __repr__(self) -> str:
        return f"#Ref<{self.node}.{self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ref) and other.id == self.id and other.node == self.node

    def __hash__(self) -> int:
        return hash((self.node, self.id, "ref"))


@dataclass(frozen=True, slots=True)
class Exit:
    """An exit signal turned into a message, received by a process that traps exits."""

    pid: Pid
    """The process the signal came from."""
    reason: Any
    """Its exit reason (``"normal"``, ``"shutdown"``, ``"killed"``, an exception, ...)."""


@dataclass(frozen=True, slots=True)
class Down:
    """Sent once to the owner of a monitor when the monitored process exits."""

    ref: Ref
    """The reference returned by ``monitor``."""
    pid: Pid
    """The monitored process."""
    reason: Any
    """Its exit reason, or ``"noproc"`` if it was not alive when monitored."""
