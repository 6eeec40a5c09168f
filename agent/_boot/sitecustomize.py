"""Put on ``PYTHONPATH`` by ``observer-agent run``: starts the agent inside the
program it launches (see ``agent/_bootstrap.py``), then runs any other
``sitecustomize`` the environment has, as Python would have without us.
Nothing here may stop the program from starting: a failure is one line on
stderr."""

from __future__ import annotations

import importlib
import os
import sys

try:
    from agent import _bootstrap

    _bootstrap.install()
except Exception as exc:  # never stop the program from starting
    print(f"observer-agent: not started: {type(exc).__name__}: {exc}", file=sys.stderr)


def _chain() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    saved = list(sys.path)
    mine = sys.modules.pop("sitecustomize", None)
    try:
        sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
        importlib.import_module("sitecustomize")
    except ImportError:
        pass
    finally:
        sys.path[:] = saved
        if mine is not None:
            sys.modules["sitecustomize"] = mine


_chain()
