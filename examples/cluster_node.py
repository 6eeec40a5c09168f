"""One node of a demo cluster: :mod:`observer.demo.node` under its old name.

``python -m examples.cluster_node`` is ``python -m observer.demo.node``.
"""

from __future__ import annotations

import sys

from observer.demo.node import main, run

__all__ = ["main", "run"]

if __name__ == "__main__":
    sys.exit(main())
