"""What killing a process would do, reasoned from the picture through a read-only :class:`GraphView`.

Follows the runtime's rules: ``kill`` cannot be trapped by the target; other
reasons are delivered as a message to a target that traps exits (it
survives) and ignored by a non-trapping one if ``normal``. A dying process
sends its reason down every link: non-trapping processes die (unless the
reason is ``normal``), trapping ones get a message and survive; a supervisor
receiving a child's exit restarts by its strategy (one_for_one: just it;
one_for_all: every sibling; rest_for_one: the siblings started after it),
unless ``used + 1 > intensity``, in which case it gives up: it exits with
``shutdown``, its subtree goes, and its own supervisor reacts (escalation).
A supervisor that dies takes its whole subtree with it.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from .queries import GraphView
from .state import pid_key

__all__ = ["kill_preview"]

_MAX_STEPS = 5_000_000


def kill_preview(view: GraphView, pid: str, reason: str = "kill", *, limit: int = 1000) -> dict[str, Any]:
    """See :meth:`observer.model.NodeModel.kill_preview` for the result's shape."""
    return _KillSim(view, pid, reason).run(limit)


class _KillSim:
    def __init__(self, view: GraphView, target: str, reason: str) -> None:
        self.v = view
        self.target = target
        self.reason = reason
        self.dead: dict[str, str] = {}
        self.how: dict[str, str] = {}
        self.notified: dict[str, str] = {}
        self.restarts: list[dict[str, Any]] = []
        self.gives_up: list[dict[str, Any]] = []
        self.used: dict[str, int] = {}
        self.ignored: dict[str, set[str]] = {}
        self.queue: deque[tuple[str, str | None, str, bool]] = deque()
        self.warnings: list[str] = []
        self.unknown_trap: set[str] = set()

    def traps(self, pid: str) -> bool:
        rec = self.v.record(pid)
        if rec.get("kind") == "supervisor":
            return True
        t = rec.get("trap_exit")
        if t is None:
            self.unknown_trap.add(pid)
            return False
        return bool(t)

    def die(self, pid: str, reason: str, how: str) -> None:
        if pid in self.dead:
            return
        self.dead[pid] = reason
        self.how[pid] = how
        self.notified.pop(pid, None)
        if self.v.record(pid).get("kind") == "supervisor":
            ign = self.ignored.setdefault(pid, set())
            for child in reversed(self.v.children(pid)):
                ign.add(child)
                self.die(child, "shutdown", "subtree")
        for other in self.v.links_of(pid):
            self.queue.append((other, pid, reason, True))

    def signal(self, t: str, sender: str | None, reason: str, link: bool) -> None:
        if t in self.dead:
            return
        if reason == "kill" and not link:
            self.die(t, "killed", "target")
            return
        if self.traps(t):
            if sender is not None and self.v.supervisor_of(sender) == t:
                self.child_exit(t, sender, reason)
            elif sender is not None and self.v.supervisor_of(t) == sender:
                self.die(t, reason, "subtree")  # a gen_server/supervisor stops with its parent
            elif sender is None:
                self.notified[t] = "(operator)"
            else:
                self.notified[t] = sender
            return
        if reason == "normal":
            return
        self.die(t, reason, "target" if sender is None else "link")

    def child_exit(self, sup: str, child: str, reason: str) -> None:
        if sup in self.dead or child in self.ignored.get(sup, set()):
            return
        rec = self.v.record(sup)
        budget = self.v.budget(sup) or {"used": 0, "intensity": 1, "period": 5.0, "strategy": "one_for_one"}
        if sup not in self.used:
            self.used[sup] = int(budget.get("used") or 0)
        if reason in ("normal", "shutdown") and child == self.target:
            self.warnings.append(f"{child} exits {reason}: restarted only if its restart type is permanent (assumed)")
        self.used[sup] += 1
        raw_int = budget.get("intensity")
        intensity = int(raw_int) if raw_int is not None else 1
        if self.used[sup] > intensity:
            self.gives_up.append(
                {
                    "supervisor": sup,
                    "name": rec.get("name") or rec.get("label"),
                    "used": self.used[sup] - 1,
                    "intensity": intensity,
                    "period": budget.get("period"),
                    "trigger": child,
                }
            )
            self.die(sup, "shutdown", "gave_up")
            return
        strategy = str(budget.get("strategy") or "one_for_one")
        kids = self.v.children(sup)
        if strategy == "one_for_all":
            group = kids
        elif strategy == "rest_for_one" and child in kids:
            group = kids[kids.index(child) :]
        else:
            group = [child]
        ign = self.ignored.setdefault(sup, set())
        for other in reversed(group):
            if other != child:
                ign.add(other)
                self.die(other, "shutdown", "restart")
        self.restarts.append(
            {
                "supervisor": sup,
                "name": rec.get("name") or rec.get("label"),
                "strategy": strategy,
                "trigger": child,
                "restarted": group,
                "used_after": self.used[sup],
                "intensity": intensity,
            }
        )

    def run(self, limit: int) -> dict[str, Any]:
        v = self.v
        if self.target not in v:
            return {
                "target": self.target,
                "exists": False,
                "reason": self.reason,
                "target_dies": False,
                "down": [],
                "warnings": ["no such process in the picture"],
            }
        rec = v.record(self.target)
        self.queue.append((self.target, None, self.reason, False))
        steps = 0
        while self.queue:
            t, sender, reason, link = self.queue.popleft()
            self.signal(t, sender, reason, link)
            steps += 1
            if steps > _MAX_STEPS:  # pragma: no cover - a safety net
                self.warnings.append("preview truncated")
                break
        is_sup = rec.get("kind") == "supervisor"
        subtree = v.descendants(self.target) if is_sup else []
        down = list(self.dead)
        linked_down = [p for p in down if self.how[p] == "link"]
        unknown = self.unknown_trap & set(down)
        if unknown:
            self.warnings.append(
                f"{len(unknown)} process(es) spawned after the snapshot have an unknown "
                "trap_exit flag and were assumed not to trap exits"
            )
        sup = v.supervisor_of(self.target)
        return {
            "target": self.target,
            "exists": True,
            "reason": self.reason,
            "name": rec.get("name") or rec.get("label"),
            "target_dies": self.target in self.dead,
            "is_supervisor": is_sup,
            "subtree": subtree[:limit],
            "subtree_count": len(subtree),
            "down": down[:limit],
            "down_count": len(down),
            "linked_down": linked_down[:limit],
            "linked_down_count": len(linked_down),
            "notified": sorted(self.notified, key=pid_key)[:limit],
            "restarts": [
                r | {"restarted": r["restarted"][:limit], "restarted_count": len(r["restarted"])} for r in self.restarts
            ],
            "gives_up": self.gives_up,
            "escalation": [x["supervisor"] for x in self.gives_up],
            "budget": v.budget(sup) if sup else None,
            "supervisor": sup,
            "warnings": self.warnings,
        }
