"""The requests a supervisor answers (OTP's ``start_child``, ``which_children``...).

Each handler reads or changes the child table of the supervisor it is given
and returns the reply; :class:`SupError` becomes an ``("error", reason)``
reply. They run in the supervisor's process (from ``handle_call``). The
client functions are in :mod:`actors._supervisor_api`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ._child_spec import TEMPORARY, ChildInfo, ChildSpec, spec_error
from ._sup_children import Child, SupError, error, start_failure, stop_pids
from ._types import Pid

if TYPE_CHECKING:
    from ._supervisor import Supervisor


async def start_child(sup: Supervisor, arg: Any) -> Any:
    if sup.strategy == "simple_one_for_one":
        extra = tuple(arg) if isinstance(arg, list | tuple) else (arg,)
        child = Child(sup._template, extra=extra)
        del extra, arg
        try:
            return ("ok", await sup._start_child(child))
        except Exception as exc:
            return error(start_failure(exc))
    spec = arg
    if not isinstance(spec, ChildSpec):
        raise SupError(("invalid_child_spec", spec))
    err = spec_error(spec, sup.auto_shutdown)
    if err is not None:
        raise SupError(err)
    if spec.id in sup._children:
        c = sup._children[spec.id]
        raise SupError(("already_started", c.pid) if c.pid is not None else "already_present")
    child = Child(spec)
    try:
        pid = await sup._start_child(child)
    except Exception as exc:
        return error(start_failure(exc))
    if pid is not None or spec.restart != TEMPORARY:  # an ignored temporary child is not kept (OTP)
        sup._children[spec.id] = child
    return ("ok", pid)


async def terminate_child(sup: Supervisor, key: Any) -> Any:
    if sup.strategy == "simple_one_for_one":
        if not isinstance(key, Pid):
            raise SupError("simple_one_for_one")  # its children are known by pid only
        child = sup._dynamic.get(key)
        if child is None:
            if sup.proc.node.is_alive(key):
                raise SupError("not_found")  # alive, but not ours
            return "ok"  # already gone: nothing to do (OTP)
        if child.restarting:
            child.restarting = False  # stops the retries: _try_again_dynamic finds nothing
            del sup._dynamic[key]
            return "ok"
        sup._dynamic.pop(key, None)
        await stop_pids(sup.proc, [key], child.spec.shutdown)
        return "ok"
    child = sup._children.get(key)
    if child is None:
        raise SupError("not_found")
    await sup._shutdown_child(child)
    if child.spec.restart == TEMPORARY:
        del sup._children[key]
    return "ok"


async def restart_child(sup: Supervisor, cid: Any) -> Any:
    _no_dynamic(sup)
    child = sup._children.get(cid)
    if child is None:
        raise SupError("not_found")
    if child.pid is not None:
        raise SupError("running")
    if child.restarting:
        raise SupError("restarting")
    try:
        pid = await sup._start_child(child)
    except Exception as exc:
        return error(start_failure(exc))
    return ("ok", pid)


async def delete_child(sup: Supervisor, cid: Any) -> Any:
    _no_dynamic(sup)
    child = sup._children.get(cid)
    if child is None:
        raise SupError("not_found")
    if child.pid is not None:
        raise SupError("running")
    if child.restarting:
        raise SupError("restarting")
    del sup._children[cid]
    return "ok"


async def get_childspec(sup: Supervisor, key: Any) -> Any:
    if sup.strategy == "simple_one_for_one":
        # as OTP's find_child: a child's pid (running or restarting), a pid
        # no longer alive, or the template's own id all name the template
        if isinstance(key, Pid):
            if key in sup._dynamic or not sup.proc.node.is_alive(key):
                return ("ok", sup._template)
        elif key == sup._template.id:
            return ("ok", sup._template)
        raise SupError("not_found")
    child = sup._children.get(key)
    if child is None:
        raise SupError("not_found")
    return ("ok", child.spec)


async def which_child(sup: Supervisor, key: Any) -> Any:
    if sup.strategy == "simple_one_for_one":
        if not isinstance(key, Pid):
            raise SupError("simple_one_for_one")
        child = sup._dynamic.get(key)
        pid = None if child is None or child.restarting else key
        row = None if child is None else ChildInfo(None, pid, child.spec.type, child.restarts, child.restarting)
    else:
        child = sup._children.get(key)
        row = None if child is None else ChildInfo(key, child.pid, child.spec.type, child.restarts, child.restarting)
    if row is None:
        raise SupError("not_found")
    return ("ok", row)


async def which_children(sup: Supervisor) -> Any:
    return sup.child_rows()


async def count_children(sup: Supervisor) -> Any:
    # as OTP: a static child counts as active only if its process is alive
    # (its EXIT may still wait in the mailbox); dynamic ones are not checked
    rows = sup.child_rows()
    simple = sup.strategy == "simple_one_for_one"
    alive = sup.proc.node.is_alive
    return {
        "specs": 1 if simple else len(rows),
        "active": sum(1 for r in rows if r.pid is not None and (simple or alive(r.pid))),
        "supervisors": sum(1 for r in rows if r.type == "supervisor"),
        "workers": sum(1 for r in rows if r.type == "worker"),
    }


async def budget(sup: Supervisor) -> Any:
    return sup.budget()


def _no_dynamic(sup: Supervisor) -> None:
    if sup.strategy == "simple_one_for_one":
        raise SupError("simple_one_for_one")


CALLS: dict[str, Callable[..., Awaitable[Any]]] = {
    "start_child": start_child,
    "terminate_child": terminate_child,
    "restart_child": restart_child,
    "delete_child": delete_child,
    "get_childspec": get_childspec,
    "which_child": which_child,
    "which_children": which_children,
    "count_children": count_children,
    "budget": budget,
}
