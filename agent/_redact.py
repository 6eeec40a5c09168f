"""The agent's redactor: the bounded serializer with the masking rule plugged in.

:mod:`agent._serialize` turns any value into bounded JSON-able data and never raises;
:mod:`agent._scrub` decides which names are secret.  :class:`Redactor` joins the two
under one :class:`~agent._scrub.RedactionPolicy` (its limits for the first, its
``mask_keys`` and ``mask`` for the second).
"""

from __future__ import annotations

from typing import Any, Final

from ._scrub import RedactionPolicy, Scrubber
from ._serialize import Encoded, Serializer

__all__ = ["Redactor", "encode"]

_DEFAULT_POLICY: Final = RedactionPolicy()


class Redactor(Serializer):
    """Encodes values under one :class:`RedactionPolicy`, with per-type rules
    (:meth:`~agent._serialize.Serializer.register_type`).

    Thread-safe: ``encode`` may run on any thread; each call has its own state.
    """

    def __init__(self, policy: RedactionPolicy = _DEFAULT_POLICY) -> None:
        super().__init__(policy, Scrubber(policy))
        self.policy = policy


def encode(value: Any, policy: RedactionPolicy = _DEFAULT_POLICY) -> Encoded:
    """Shorthand for ``Redactor(policy).encode(value)`` (no per-type registrations)."""
    return Redactor(policy).encode(value)
