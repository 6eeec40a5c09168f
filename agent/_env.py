"""Environment variables of the agent that were renamed: refused, with their new name.

0.2.0 spells the TLS triple one way everywhere (``cert``, ``key``, ``ca``:
``OBSERVER_AGENT_TLS_CA``, ``OBSERVER_DIAL_TLS_CERT``...). An old name is an
error rather than ignored: a certificate setting silently dropped would turn
TLS (or mutual TLS) off without a word.
"""

from __future__ import annotations

import os

__all__ = ["RENAMED_ENV", "refuse_renamed_env"]

RENAMED_ENV = {
    "OBSERVER_AGENT_TLS_CLIENT_CA": "OBSERVER_AGENT_TLS_CA",
    "OBSERVER_DIAL_CA": "OBSERVER_DIAL_TLS_CA",
    "OBSERVER_DIAL_CERT": "OBSERVER_DIAL_TLS_CERT",
    "OBSERVER_DIAL_KEY": "OBSERVER_DIAL_TLS_KEY",
    "OBSERVER_DIAL_SERVER_NAME": "OBSERVER_DIAL_SERVER_HOSTNAME",
}
"""Old name -> new name."""


def refuse_renamed_env() -> None:
    """Raise ``ValueError`` naming the new name of every old variable that is set."""
    old = [k for k in RENAMED_ENV if os.environ.get(k)]
    if old:
        raise ValueError("renamed in 0.2.0: " + ", ".join(f"{k} is now {RENAMED_ENV[k]}" for k in old))
