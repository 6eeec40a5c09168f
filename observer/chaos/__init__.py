"""Chaos experiments on a live supervision tree (see ``docs/chaos.md``).

An experiment kills processes of an attached node through its agent (the
``kill`` command) by a policy, while a steady-state hypothesis is checked
before, during and after; everything goes into a journal (JSON, and the
observer's SQLite history).

* :mod:`.experiment` -- the model and the JSON/YAML loader (Chaos Toolkit's shape);
* :mod:`.engine` -- the runner; :mod:`.tracking` -- kills followed through the stream;
  :mod:`.budget` -- the within-budget ledger;
  :mod:`.targets` -- victim selection; :mod:`.hypothesis` -- the checks;
* :mod:`.cancel` -- asyncio nodes: ``cancel`` actions (the asyncio kill) and the ``http`` probe;
* :mod:`.journal` -- the journal and its SQLite table; :mod:`.runner` -- a run
  with an attach manager of its own (CLI, chaostoolkit, bench);
* :mod:`.web` -- the Chaos page and ``/api/chaos`` (``observer chaos`` is in :mod:`observer.cli.chaos`).
"""

from .engine import Engine
from .experiment import (
    CancelSpec,
    Experiment,
    ExperimentError,
    KillSpec,
    Probe,
    Rollback,
    cancel_spec,
    kill_spec,
    load,
    parse,
)
from .journal import ChaosHistory, Journal, percentiles, save_json
from .runner import attached, run

__all__ = [
    "CancelSpec",
    "ChaosHistory",
    "Engine",
    "Experiment",
    "ExperimentError",
    "Journal",
    "KillSpec",
    "Probe",
    "Rollback",
    "attached",
    "cancel_spec",
    "kill_spec",
    "load",
    "parse",
    "percentiles",
    "run",
    "save_json",
]
