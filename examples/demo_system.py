"""The demo system, now shipped with the observer: :mod:`observer.demo.system`.

Kept under its old name for code and tests that import ``examples.demo_system``:
this name is the very same module object (every name, public or not, and the
same globals for anyone who patches them).
"""

from __future__ import annotations

import sys

from observer.demo import system

sys.modules[__name__] = system
