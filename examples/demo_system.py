"""The demo system, now shipped with the observer: :mod:`observer.demo.system`.

Kept under its old name for code and tests that import ``examples.demo_system``.
"""

from __future__ import annotations

from observer.demo.system import *  # noqa: F403
from observer.demo.system import __all__ as __all__
