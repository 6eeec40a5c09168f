"""The watchdog's alarm on Linux: a kernel timer (``timerfd``) that the host's
tick pushes back at every heartbeat, so that the agent's thread sleeps for as
long as the ticks come and wakes only when one is overdue.

Why: a timer on the agent's own loop has to wake the agent's thread to be
pushed back (about five times a second), and every wake of that thread makes
a busy host hand it the GIL (measured earlier: ~0.4 % of the host's
throughput per wake a second, agent/_collector.py). With this alarm, pushing
the deadline back is one system call made by the host's tick itself, with
the GIL held (``ctypes.PyDLL``), ~1-2 µs ten times a second; the agent's loop
watches the timer's file descriptor and hears of it only when it expires.

Standard library only (``ctypes`` and libc's ``timerfd_create`` and
``timerfd_settime``, Linux 2.6.25+); :func:`Alarm.create` returns None
anywhere else, and the agent falls back to a timer on its loop
(agent/_clock.py).
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Any

_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class Alarm:
    """A one-shot monotonic timer readable as a file descriptor. :meth:`arm`
    may be called from any thread; it never raises and never releases the GIL."""

    def __init__(self, fd: int, settime: Any) -> None:
        self.fd = fd
        self._settime = settime

    @classmethod
    def create(cls) -> Alarm | None:
        """A new alarm, or None where ``timerfd`` is not available."""
        if not sys.platform.startswith("linux"):
            return None
        try:
            libc = ctypes.PyDLL(None, use_errno=True)  # PyDLL: the GIL is kept during the call
            create = libc.timerfd_create
            create.argtypes = [ctypes.c_int, ctypes.c_int]
            create.restype = ctypes.c_int
            settime = libc.timerfd_settime
            settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec), ctypes.c_void_p]
            settime.restype = ctypes.c_int
            fd = create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        except (OSError, AttributeError):
            return None
        if fd < 0:
            return None
        return cls(fd, settime)

    def arm(self, delay: float) -> None:
        """Expire ``delay`` seconds from now (replacing any earlier deadline);
        ``delay`` <= 0 disarms it."""
        spec = _Itimerspec()  # one per call: two threads may arm it at once
        if delay > 0:
            sec = int(delay)
            spec.it_value.tv_sec = sec
            spec.it_value.tv_nsec = max(1, int((delay - sec) * 1e9))
        self._settime(self.fd, 0, ctypes.byref(spec), None)

    def clear(self) -> None:
        """Agent loop, once it fired: consume the expiry (the fd is readable until then)."""
        try:
            os.read(self.fd, 8)
        except OSError:  # nothing to read (not expired, or already read)
            pass

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass
