"""Inside a program started by ``observer-agent run``: attach the agent to the
event loop the program creates, with no change to its code.

:func:`install` runs from ``sitecustomize`` before the program's own code. It
does nothing unless ``OBSERVER_AGENT_BIND`` or ``OBSERVER_DIAL`` is set; then
it watches for the program's event loop in two ways:

* an event-loop policy that wraps the current one: a loop made by
  ``asyncio.new_event_loop()`` (``asyncio.run``, aiohttp's ``run_app``,
  uvicorn on the asyncio loop) is observed before its first task exists;
* the moment any loop starts running in the main thread (asyncio's
  ``_set_running_loop``, which every loop implementation calls, uvloop's
  included, is wrapped): a loop made some other way (``uvloop.run``, an
  ``asyncio.Runner`` with a ``loop_factory``, an application that replaced
  the policy) is observed from there, its first tasks adopted.

Only loops of the main thread are observed. The first one starts the agent
(:func:`agent.start_from_env`); each later one (``asyncio.run`` called again)
replaces it as the agent's source (:meth:`AsyncioSource.retarget`). The
agent is stopped at interpreter exit. ``OBSERVER_AGENT_ADDRESS_FILE``, if
set, receives ``HOST:PORT`` once the agent listens.

Mixed programs: when the agent meets an :class:`actors.Node` running on the
observed loop (a task whose done callback is an ``actors.Process``: read on
the agent's thread within a heartbeat of the process's spawn), the agent is
restarted, on the same address, with a
:class:`agent.mixed.MixedSource` for that node: the node's supervision tree
and the program's other tasks in one picture. Observers attached then lose
their session once and reconnect (the handshake now says ``actors`` with
``include_tasks``); the tasks alive then are adopted (their creation lines
are lost). A later loop (``asyncio.run`` again) goes back to a plain asyncio
source the same way.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import sys
import threading
import warnings
from typing import Any

import actors

from . import start_from_env
from ._aio_source import AsyncioSource
from .mixed import MixedSource

_state: dict[str, Any] = {"agent": None, "failed": False}
_lock = threading.Lock()


def enabled() -> bool:
    return bool(os.environ.get("OBSERVER_AGENT_BIND") or os.environ.get("OBSERVER_DIAL"))


def install() -> None:
    """Arm both watches (see the module docstring). Idempotent."""
    if not enabled() or _state.get("installed"):
        return
    _state["installed"] = True
    with warnings.catch_warnings():  # policies are deprecated from 3.14; they still work
        warnings.simplefilter("ignore", DeprecationWarning)
        base = asyncio.get_event_loop_policy()
        asyncio.set_event_loop_policy(ObservingPolicy(base))
    orig = asyncio.events._set_running_loop

    def _set_running_loop(loop: asyncio.AbstractEventLoop | None) -> None:
        orig(loop)
        if loop is not None and threading.current_thread() is threading.main_thread():
            observe(loop)

    asyncio.events._set_running_loop = _set_running_loop
    asyncio._set_running_loop = _set_running_loop
    atexit.register(_stop)


def observe(loop: asyncio.AbstractEventLoop) -> None:
    """Make ``loop`` the observed one (main thread; never raises)."""
    with _lock:
        ag = _state["agent"]
        if _state["failed"]:
            return
        try:
            if ag is None:
                ag = start_from_env(loop)
                _state["agent"] = ag
                if ag is None:
                    _state["failed"] = True
                    return
                _started(ag)
            elif ag.source.loop is not loop and isinstance(ag.source, AsyncioSource):
                ag.source.retarget(loop)
            elif ag.source.loop is not loop:  # a mixed source: its node stayed with the old loop
                _restart(ag, loop)
        except Exception as exc:
            _state["failed"] = True
            print(f"observer-agent: not started: {type(exc).__name__}: {exc}", file=sys.stderr)


def _started(ag: Any) -> None:
    """The agent listens: write its address, and watch for an actors node on its loop."""
    path = os.environ.get("OBSERVER_AGENT_ADDRESS_FILE")
    if path:
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(ag.address)
        os.replace(tmp, path)
    if isinstance(ag.source, AsyncioSource):
        ag.source.on_node = _node_met


def _node_met(node: actors.Node) -> None:
    """Agent thread: an actors node runs on the observed loop. The switch to a
    mixed source runs on the node's loop (stopping the agent joins its thread)."""
    try:
        node.loop.call_soon_threadsafe(_to_mixed, node)
    except RuntimeError:  # the loop is closed
        pass


def _to_mixed(node: actors.Node) -> None:
    with _lock:
        ag = _state["agent"]
        if ag is None or _state["failed"] or not isinstance(ag.source, AsyncioSource):
            return
        if ag.source.loop is not node.loop:
            return
        try:
            _restart(ag, MixedSource(node))
        except Exception as exc:
            _state["failed"] = True
            print(f"observer-agent: stopped: {type(exc).__name__}: {exc}", file=sys.stderr)


def _restart(ag: Any, target: Any) -> None:
    """Stop the agent and start another one for ``target`` on the same address (lock held)."""
    address = ag.address
    ag.stop()
    _state["agent"] = None
    new = start_from_env(target, bind=address)
    _state["agent"] = new
    if new is None:
        _state["failed"] = True
        return
    _started(new)


def _stop() -> None:
    ag = _state["agent"]
    if ag is not None:
        try:
            ag.stop()
        except Exception:
            pass


class ObservingPolicy(asyncio.AbstractEventLoopPolicy):
    """The application's policy, unchanged, except that each loop it makes
    in the main thread is observed."""

    def __init__(self, base: asyncio.AbstractEventLoopPolicy) -> None:
        self.base = base

    def get_event_loop(self) -> asyncio.AbstractEventLoop:
        return self.base.get_event_loop()

    def set_event_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.base.set_event_loop(loop)

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        loop = self.base.new_event_loop()
        if threading.current_thread() is threading.main_thread():
            observe(loop)
        return loop

    def get_child_watcher(self) -> Any:  # 3.11, 3.12 (deprecated there, gone in 3.14)
        return self.base.get_child_watcher()

    def set_child_watcher(self, watcher: Any) -> None:
        self.base.set_child_watcher(watcher)

    def __getattr__(self, name: str) -> Any:  # anything else the base policy offers
        return getattr(self.base, name)
