"""The demo system alone: :mod:`observer.demo.payments` under its old name.

``python -m examples.payments`` is ``python -m observer.demo.payments``.
"""

from __future__ import annotations

import sys

from observer.demo.payments import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
