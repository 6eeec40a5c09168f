"""How the extension finds the agent: the experiment's configuration, secrets or the environment.

Configuration keys: ``observer_agent`` (``HOST:PORT``, or env ``OBSERVER_AGENT``),
``observer_token_file`` (a file holding the operator token). Secrets: an
``observer`` secret with a ``token`` key (give ``secrets: ["observer"]`` in the
provider). Otherwise ``OBSERVER_NODE_TOKEN_FILE`` / ``OBSERVER_NODE_TOKEN`` (the
observer's token for reaching agents, as for ``observer serve``).
A token never appears in the experiment or the journal.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..attach import AttachManager, Attachment
from ..chaos.runner import attached

__all__ = ["connect"]


def _token(configuration: dict[str, Any], secrets: dict[str, Any]) -> str:
    tok = secrets.get("token") if isinstance(secrets, dict) else None
    if isinstance(tok, str) and tok.strip():
        return tok.strip()
    path = configuration.get("observer_token_file") or os.environ.get("OBSERVER_NODE_TOKEN_FILE")
    if path:
        text = Path(str(path)).read_text(encoding="utf-8").strip()
        if text:
            return text
    env = os.environ.get("OBSERVER_NODE_TOKEN", "").strip()
    if env:
        return env
    raise ValueError(
        "no agent token: set the observer_token_file configuration, an 'observer' secret with a token, "
        "or OBSERVER_NODE_TOKEN(_FILE)"
    )


@contextlib.contextmanager
def connect(
    configuration: dict[str, Any] | None, secrets: dict[str, Any] | None
) -> Iterator[tuple[AttachManager, Attachment]]:
    """Attach (operator role) to the configured agent for the length of one activity."""
    cfg = configuration or {}
    address = cfg.get("observer_agent") or os.environ.get("OBSERVER_AGENT")
    if not address:
        raise ValueError("no agent address: set the observer_agent configuration (HOST:PORT) or OBSERVER_AGENT")
    timeout = float(cfg.get("observer_attach_timeout") or 30.0)
    with attached(str(address), _token(cfg, secrets or {}), timeout=timeout) as pair:
        yield pair
