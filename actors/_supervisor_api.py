"""The supervisor's client functions: start one, nest one, and talk to one.

Every function here that may wait is ``async`` and sends the supervisor a
call; the supervisor answers between two restarts, never in the middle of one.
A refusal raises :class:`SupervisorError` with OTP's reason.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

from ._child_spec import INFINITY, NEVER, PERMANENT, Budget, ChildInfo, ChildSpec
from ._errors import SupervisorError
from ._gen_server import start, start_link
from ._node import Node
from ._process import Process
from ._supervisor import Supervisor
from ._types import Pid


async def start_supervisor(
    node: Node,
    children: Sequence[ChildSpec] = (),
    *,
    strategy: str = "one_for_one",
    intensity: int = 1,
    period: float = 5.0,
    auto_shutdown: str = NEVER,
    name: str | None = None,
    label: str | None = None,
) -> Pid:
    """Start a top-level supervisor and its children; returns its pid.

    Raises :class:`StartError` if a child failed to start (the ones already
    started are stopped again) or a spec does not fit the flags (reason
    ``("start_spec", ...)``), and ``ValueError`` for bad flags."""
    sup = Supervisor(children, strategy=strategy, intensity=intensity, period=period, auto_shutdown=auto_shutdown)
    pid = await start(node, sup, name=name, label=label or "Supervisor", timeout=None)
    assert pid is not None
    return pid


def supervisor_spec(
    id: Hashable,
    children: Sequence[ChildSpec] | Callable[[], Supervisor],
    *,
    strategy: str = "one_for_one",
    intensity: int = 1,
    period: float = 5.0,
    auto_shutdown: str = NEVER,
    restart: str = PERMANENT,
    significant: bool = False,
    name: str | None = None,
    label: str | None = None,
) -> ChildSpec:
    """A child spec for a nested supervisor (shutdown ``infinity``).

    ``children`` is a list of specs, or a zero-argument factory returning a
    :class:`Supervisor` (a subclass, say), called at every (re)start."""
    if not callable(children) or isinstance(children, Sequence):
        # check the flags now, where the mistake is, not at the first start
        Supervisor((), strategy=strategy, intensity=intensity, period=period, auto_shutdown=auto_shutdown)

    async def start_fn(parent: Process, *extra: Any) -> Pid | None:
        if callable(children) and not isinstance(children, Sequence):
            sup = children()
        else:
            sup = Supervisor(
                children, strategy=strategy, intensity=intensity, period=period, auto_shutdown=auto_shutdown
            )
        return await start_link(parent, sup, *extra, name=name, label=label or "Supervisor", timeout=None)

    return ChildSpec(id, start_fn, restart, INFINITY, "supervisor", label or "Supervisor", significant)


async def _sup_call(node: Node, sup: Pid | str, request: tuple[Any, ...], timeout: float | None) -> Any:
    return await node.call(sup, request, timeout=timeout)


def _unwrap(res: Any) -> Any:
    if isinstance(res, tuple) and len(res) == 2 and res[0] == "error":
        raise SupervisorError(res[1])
    if isinstance(res, tuple) and len(res) == 2 and res[0] == "ok":
        return res[1]
    return res


async def start_child(node: Node, sup: Pid | str, spec_or_args: Any, *, timeout: float | None = 5.0) -> Pid | None:
    """Add and start a child: a :class:`ChildSpec`, or for simple_one_for_one the
    extra start arguments (a tuple or list, or one value). Returns its pid, or
    None if its start returned ignore (a temporary child is then not kept)."""
    return _unwrap(await _sup_call(node, sup, ("start_child", spec_or_args), timeout))


async def terminate_child(node: Node, sup: Pid | str, child: Any, *, timeout: float | None = 5.0) -> None:
    """Stop a child by id (by pid, for simple_one_for_one: an id there raises
    ``simple_one_for_one``, a pid no longer alive succeeds). It is not
    restarted; its spec stays (except temporary ones) for :func:`restart_child`.
    A child caught in a failing restart stops being retried."""
    _unwrap(await _sup_call(node, sup, ("terminate_child", child), timeout))


async def restart_child(node: Node, sup: Pid | str, child_id: Any, *, timeout: float | None = 5.0) -> Pid | None:
    """Start again a child that was terminated (its spec kept)."""
    return _unwrap(await _sup_call(node, sup, ("restart_child", child_id), timeout))


async def delete_child(node: Node, sup: Pid | str, child_id: Any, *, timeout: float | None = 5.0) -> None:
    """Remove the spec of a terminated child."""
    _unwrap(await _sup_call(node, sup, ("delete_child", child_id), timeout))


async def get_childspec(node: Node, sup: Pid | str, child: Any, *, timeout: float | None = 5.0) -> ChildSpec:
    """The spec of a child, by id (by pid for simple_one_for_one: the
    template). Raises :class:`SupervisorError` ``not_found``. A running
    temporary child's spec comes without its start function, which the
    supervisor does not keep (OTP answers its arguments as ``undefined``)."""
    return _unwrap(await _sup_call(node, sup, ("get_childspec", child), timeout))


async def which_child(node: Node, sup: Pid | str, child: Any, *, timeout: float | None = 5.0) -> ChildInfo:
    """One row of :func:`which_children`, by id (by pid for simple_one_for_one)."""
    return _unwrap(await _sup_call(node, sup, ("which_child", child), timeout))


async def which_children(node: Node, sup: Pid | str, *, timeout: float | None = 5.0) -> list[ChildInfo]:
    """The children, in start order (a restarting one with ``restarting`` set)."""
    return await _sup_call(node, sup, ("which_children",), timeout)


async def count_children(node: Node, sup: Pid | str, *, timeout: float | None = 5.0) -> dict[str, int]:
    """Counts: ``specs``, ``active``, ``supervisors``, ``workers`` (children
    being restarted count as specs but not as active)."""
    return await _sup_call(node, sup, ("count_children",), timeout)


def budget(node: Node, sup: Pid | str) -> Budget:
    """The restart budget of a supervisor, read directly (no message, any thread)."""
    b = node.process(sup).behaviour
    if not isinstance(b, Supervisor):
        raise SupervisorError("not_a_supervisor")
    return b.budget()
