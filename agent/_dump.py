"""The post-mortem dump: every process and the recent crash reports, in one file.

When the host asks for it (``agent.start(node, ..., dump_dir=DIR)`` or
``OBSERVER_AGENT_DUMP_DIR``), the agent writes a dump when the node goes down:

* on SIGTERM (a handler is installed when the agent starts in the main
  thread; the previous handler runs afterwards, and the default one -- the
  process ends -- is honoured by re-raising the signal);
* when a root supervisor gives up (its restart intensity was exceeded: the
  whole tree goes down);
* on an uncaught exception in the main thread (``sys.excepthook``, chained);
* on request: the operator command ``dump``.

The file (``observer-dump-<node>-<ospid>-<time>.json``, ``.json.gz`` with
``gzip=True``) is JSON: ``{"format": "observer-dump", "version": 1, "reason",
"time", "node": {...}, "names": {...}, "processes": [...], "crashes": [...]}``;
each process is a snapshot record (``protocol.PROCESS_FIELDS``) plus ``path``
(supervisor path, root first) and ``stack``; ``crashes`` are the recent crash
reports (at most 100, oldest first), encoded and redacted as on the wire.

No deadlock, no torn file
    The signal handler only wakes a dedicated writer thread (started with the
    agent; an ``Event``, no other lock) and waits for it, at most ``timeout``
    seconds: while it waits the host loop (the main thread) is frozen, so the
    picture is consistent; the writer takes no lock the host may hold, and
    logs only once the handler has been released. The file is written to a
    temporary name in the same directory, flushed, fsynced and renamed into
    place, so a reader sees a whole dump or none. A write error (disk full, a
    read-only directory) is logged with its cause and leaves no partial file.
"""

from __future__ import annotations

import errno
import gzip
import json
import logging
import os
import signal
import sys
import threading
import time
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

import actors
from actors import process_stack

from . import protocol as P
from ._encode import process_record

if TYPE_CHECKING:
    from ._agent import Agent

log = logging.getLogger("agent")

FORMAT = P.DUMP_FORMAT
VERSION = P.DUMP_VERSION


class Dumper(actors.Instrument):
    """Writes dumps for one agent. :meth:`start` arms the triggers, :meth:`stop` disarms them."""

    def __init__(self, agent: Agent, directory: str, *, gzip: bool = False, timeout: float = 10.0) -> None:
        self.agent = agent
        self.directory = os.path.abspath(directory)
        self.gzip = gzip
        self.timeout = timeout
        self.last_path: str | None = None
        self.last_error: str | None = None
        self.written = 0
        self._request = threading.Event()
        self._done = threading.Event()
        self._reason = ""
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._prev_sigterm: Any = None
        self._sigterm_installed = False
        self._prev_excepthook: Any = None
        self._write_lock = threading.Lock()

    # -- arming ------------------------------------------------------------------------------

    def start(self, *, sigterm: bool = True) -> Dumper:
        os.makedirs(self.directory, exist_ok=True)
        self._thread = threading.Thread(target=self._writer, name="observer-agent-dump", daemon=True)
        self._thread.start()
        self.agent.node.add_instrument(self)
        if sigterm:
            if threading.current_thread() is threading.main_thread():
                self._prev_sigterm = signal.getsignal(signal.SIGTERM)
                signal.signal(signal.SIGTERM, self._on_sigterm)
                self._sigterm_installed = True
            else:
                log.warning("agent: not in the main thread: no dump on SIGTERM (start the agent from the main thread)")
        self._prev_excepthook = sys.excepthook
        sys.excepthook = self._excepthook
        return self

    def stop(self) -> None:
        """Disarm (restore the previous handlers) and stop the writer. Idempotent."""
        if self._stopping:
            return
        self._stopping = True
        try:
            self.agent.node.remove_instrument(self)
        except Exception:
            pass
        if self._sigterm_installed and threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGTERM) == self._on_sigterm:
                signal.signal(signal.SIGTERM, self._prev_sigterm)
            self._sigterm_installed = False
        if sys.excepthook == self._excepthook:
            sys.excepthook = self._prev_excepthook
        self._request.set()
        if self._thread is not None:
            self._thread.join(5)

    # -- triggers --------------------------------------------------------------------------------

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self.request(f"signal {signal.Signals(signum).name}", wait=True)
        prev = self._prev_sigterm
        if callable(prev):
            prev(signum, frame)
        elif prev == signal.SIG_DFL or prev is None:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    def _excepthook(self, tp: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if not issubclass(tp, KeyboardInterrupt | SystemExit):
            self.request(f"uncaught {tp.__name__} in the main thread", wait=True)
        prev = self._prev_excepthook or sys.__excepthook__
        prev(tp, value, tb)

    def supervisor_gave_up(self, event: actors.SupervisorGaveUp) -> None:
        """Host loop: a root supervisor giving up takes the whole tree down."""
        p = actors.find_process(self.agent.node, event.supervisor)
        if p is not None and p.supervisor is None:
            self.request(f"root supervisor {event.supervisor} gave up (restart intensity exceeded)", wait=True)

    def request(self, reason: str, *, wait: bool = False) -> None:
        """Have the writer thread write a dump; with ``wait``, block until it
        is written (at most ``timeout`` seconds). Safe in a signal handler."""
        if self._stopping or self._thread is None:
            return
        self._reason = reason
        self._done.clear()
        self._request.set()
        if wait:
            self._done.wait(self.timeout)

    def _writer(self) -> None:
        while True:
            self._request.wait()
            self._request.clear()
            if self._stopping:
                self._done.set()
                return
            path = self.write(self._reason, _quiet=True)
            self._done.set()
            # log only now: the handler that asked may have held the logging lock
            if path is not None:
                log.warning("agent: post-mortem dump written to %s (%s)", path, self._reason)
            elif self.last_error:
                log.error("agent: %s", self.last_error)

    # -- writing (any thread) -------------------------------------------------------------------

    def build(self, reason: str) -> dict[str, Any]:
        """The dump as a dict (reads the node; safe from any thread)."""
        ag = self.agent
        node = ag.node
        procs = [p for p in node.iter_processes() if p.alive]
        sup_of = {p.pid.id: p.supervisor for p in procs}
        out = []
        for p in procs:
            try:
                rec: dict[str, Any] = {**process_record(p)}
            except Exception:  # changed under our feet: skip it
                continue
            path = [str(p.pid)]
            up = p.supervisor
            while up is not None and len(path) < 256:
                path.append(str(up))
                up = sup_of.get(up.id)
            path.reverse()
            rec["path"] = path
            try:
                rec["stack"] = [
                    {"function": f.function, "file": f.filename, "line": f.lineno} for f in process_stack(p)
                ]
            except Exception:
                rec["stack"] = []
            out.append(rec)
        meta: dict[str, Any]
        try:
            meta = {**ag.node_meta()}
        except Exception:
            meta = {"node_id": node.node_id}
        crash_log = getattr(ag, "crash_log", None)
        return {
            "format": FORMAT,
            "version": VERSION,
            "reason": reason,
            "time": time.time(),
            "node": meta,
            "names": ag.names(),
            "processes": out,
            "crashes": crash_log.recent() if crash_log is not None else [],
        }

    def write(self, reason: str, *, _quiet: bool = False) -> str | None:
        """Write a dump now; its path, or None (``last_error`` says why)."""
        with self._write_lock:
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{time.time() % 1:.3f}"[2:]
            name = f"observer-dump-{self.agent.node.node_id}-{os.getpid()}-{stamp}.json" + (".gz" if self.gzip else "")
            path = os.path.join(self.directory, name)
            tmp = os.path.join(self.directory, f".{name}.tmp")
            try:
                data = json.dumps(self.build(reason), separators=(",", ":"), default=str).encode()
                if self.gzip:
                    data = gzip.compress(data, compresslevel=6)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    view = memoryview(data)
                    while view:
                        n = os.write(fd, view)
                        view = view[n:]
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, path)
            except Exception as exc:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                why = "disk full" if isinstance(exc, OSError) and exc.errno == errno.ENOSPC else type(exc).__name__
                self.last_error = f"cannot write the post-mortem dump {path}: {why}: {exc}"
                if not _quiet:
                    log.error("agent: %s", self.last_error)
                return None
            self.last_path = path
            self.last_error = None
            self.written += 1
            return path
