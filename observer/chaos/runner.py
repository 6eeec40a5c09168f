"""Run an experiment against an agent without the web app: an attach manager of its own.

Used by ``observer chaos`` (the CLI), the Chaos Toolkit extension and the
benchmark. :func:`attached` yields an operator :class:`Attachment` whose
model is up to date (snapshot received); :func:`run` runs one experiment
on it and returns the journal.

Threading rules
    Blocking functions for a plain thread (never the attach loop's).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from agent import protocol as P

from ..attach import AttachManager, Attachment
from .engine import Engine, ProgressHook
from .experiment import Experiment

__all__ = ["attached", "run"]


@contextlib.contextmanager
def attached(
    address: str, token: str, *, timeout: float = 30.0, name: str | None = None
) -> Iterator[tuple[AttachManager, Attachment]]:
    """Attach to ``address`` as operator and wait for the first snapshot (``TimeoutError`` if it
    does not come within ``timeout``, with the attachment's last error)."""
    mgr = AttachManager(change_interval=0.02)
    try:
        att = mgr.add(address, token, P.ROLE_OPERATOR, name=name or address)
        deadline = time.monotonic() + timeout
        while att.model.status != "up" or att.client is None:
            if (att.last_error or "").startswith(P.E_AUTH_FAILED):
                raise TimeoutError(f"cannot attach to {address}: {att.last_error} (not an operator token?)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"cannot attach to {address}: {att.last_error or att.model.status}")
            time.sleep(0.02)
        time.sleep(0.1)  # the snapshot's change batch goes out before anyone subscribes
        yield mgr, att
    finally:
        mgr.close()


def run(
    mgr: AttachManager,
    att: Attachment,
    experiment: Experiment,
    *,
    on_progress: ProgressHook | None = None,
    exp_id: str | None = None,
    box: list[Engine] | None = None,
) -> tuple[Engine, dict[str, Any]]:
    """Run ``experiment`` and wait for its journal (``box``, if given, receives the engine at once).
    Ctrl-C aborts it (the steady state is still checked)."""
    engine = Engine(att, experiment, loop=mgr.loop, on_progress=on_progress, exp_id=exp_id)
    if box is not None:
        box.append(engine)
    fut = engine.start()
    try:
        while True:
            try:
                return engine, fut.result(0.2)
            except TimeoutError:
                continue
    except KeyboardInterrupt:
        engine.abort("interrupted (Ctrl-C)")
        return engine, fut.result()
