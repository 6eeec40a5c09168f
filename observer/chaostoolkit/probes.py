"""Chaos Toolkit probes on the live tree (``type: python`` providers), read through the agent.

::

    {"type": "probe", "name": "tree-up", "tolerance": true,
     "provider": {"type": "python", "module": "observer.chaostoolkit.probes", "func": "tree_alive",
                  "arguments": {"names": ["demo_sup", "payments_sup"]}}}

Each probe attaches, reads one fresh snapshot of the node and detaches:

* ``tree_alive(names)`` -> bool: every registered name is alive (without
  names: the node has at least one live supervisor);
* ``supervisor_gave_up(root=None)`` -> bool: some supervisor (under ``root``)
  has been restarted by its own supervisor -- what happens when it gives up
  (or is killed) -- or a named ``root`` is gone; use ``tolerance: false``;
* ``process_count()`` -> int (use a range tolerance, e.g. ``[20, 40]``);
* ``mailbox_size(name)`` -> int;
* ``budget_used(name)`` -> int: restarts the named supervisor used in its current period.

Threading rules
    Blocking calls for chaostoolkit's thread; each attaches for its own length.
"""

from __future__ import annotations

from typing import Any

from ..chaos.hypothesis import resolve
from ._connect import connect

__all__ = ["budget_used", "mailbox_size", "process_count", "supervisor_gave_up", "tree_alive"]

Cfg = dict[str, Any] | None


def tree_alive(names: list[str] | None = None, configuration: Cfg = None, secrets: Cfg = None) -> bool:
    with connect(configuration, secrets) as (_, att):
        m = att.model
        if names:
            return all(resolve(m, n) is not None for n in names)
        return int(m.summary()["supervisor_count"]) > 0


def supervisor_gave_up(root: str | None = None, configuration: Cfg = None, secrets: Cfg = None) -> bool:
    with connect(configuration, secrets) as (_, att):
        m = att.model
        scope: set[str] | None = None
        if root is not None:
            top = resolve(m, root)
            if top is None:
                return True
            with m.locked() as g:
                scope = {p for p in g.nodes if top in m.path_to_root(p)}
        with m.locked() as g:
            recs = dict(g.nodes(data=True))
        return any(
            r.get("kind") == "supervisor" and int(r.get("restarts") or 0) > 0
            for p, r in recs.items()
            if scope is None or p in scope
        )


def process_count(configuration: Cfg = None, secrets: Cfg = None) -> int:
    with connect(configuration, secrets) as (_, att):
        return len(att.model)


def mailbox_size(name: str, configuration: Cfg = None, secrets: Cfg = None) -> int:
    with connect(configuration, secrets) as (_, att):
        pid = resolve(att.model, name)
        if pid is None:
            raise RuntimeError(f"no process named {name!r}")
        return int((att.model.process(pid) or {}).get("mailbox") or 0)


def budget_used(name: str, configuration: Cfg = None, secrets: Cfg = None) -> int:
    with connect(configuration, secrets) as (_, att):
        pid = resolve(att.model, name)
        if pid is None:
            raise RuntimeError(f"no process named {name!r}")
        info = att.command("inspect", pid=pid, mailbox_limit=0)
        return int((info.get("budget") or {}).get("used") or 0)
