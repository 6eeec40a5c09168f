"""``python -m observer.demo``: the demo system with its agent (:func:`observer.demo.main`)."""

from __future__ import annotations

import sys

from . import main

sys.exit(main())
