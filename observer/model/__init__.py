"""The live picture of attached nodes: one pure reducer, and a facade with a lock over it.

* :mod:`~observer.model.state` -- :class:`State` (a networkx graph and what is
  derived from the same messages), :class:`Change`, :func:`pid_key`;
* :mod:`~observer.model.reducer` -- :func:`reduce`, the one place messages are folded;
* :mod:`~observer.model.node` -- :class:`NodeModel`, the facade pages and handlers read from;
* :mod:`~observer.model.queries`, :mod:`~observer.model.tree`,
  :mod:`~observer.model.rates`, :mod:`~observer.model.kill_preview` -- what is
  asked of a state, one concern each;
* :mod:`~observer.model.history` -- checkpoints and replay for time travel, with the same reducer.
"""

from __future__ import annotations

from .history import checkpoint, checkpoint_json, history_state, proc_table, replay, restore
from .node import NodeModel
from .queries import SORT_KEYS, GraphView
from .reducer import reduce
from .state import Change, State, pid_key
from .tree import build_tree, tidy_layout

__all__ = [
    "SORT_KEYS",
    "Change",
    "GraphView",
    "NodeModel",
    "State",
    "build_tree",
    "checkpoint",
    "checkpoint_json",
    "history_state",
    "pid_key",
    "proc_table",
    "reduce",
    "replay",
    "restore",
    "tidy_layout",
]
