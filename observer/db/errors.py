"""The database layer's errors: one base class, each saying when it is raised."""

from __future__ import annotations

__all__ = ["AuditError", "SchemaTooNewError", "StoreError"]


class StoreError(Exception):
    """The history database cannot be used (cannot be opened, read, or is not ours)."""


class SchemaTooNewError(StoreError):
    """The history file was written by a newer observer (its schema version is
    above the last migration we know): raised when it is opened, nothing written."""


class AuditError(StoreError):
    """The audit row could not be committed: do not carry out the action."""
