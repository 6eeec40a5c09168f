"""Reading a command's arguments: the error a bad one raises, and the small
readers every command handler shares (a pid or name, a reason, a bounded
integer). Its own module because both the command table (``_commands``) and
the crash-report commands (``_crash``) use them.
"""

from __future__ import annotations

from typing import Any

import actors

from . import protocol as P

__all__ = ["CommandError", "int_arg", "reason_arg", "target_arg"]


class CommandError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def target_arg(args: dict[str, Any], key: str = "pid") -> actors.Pid | str:
    raw = args.get(key)
    if not isinstance(raw, str) or not raw or len(raw) > 200:
        raise CommandError(P.E_BAD_ARGS, f"'{key}' must be a pid like <0.42.0> or a registered name")
    if raw.startswith("<"):
        try:
            return actors.Pid.parse(raw)
        except ValueError:
            raise CommandError(P.E_BAD_ARGS, f"not a pid: {raw[:50]!r}") from None
    return raw


def reason_arg(args: dict[str, Any]) -> Any:
    r = args.get("reason", "kill")
    if not isinstance(r, str) or not r or len(r) > 200:
        raise CommandError(P.E_BAD_ARGS, "'reason' must be a short string")
    return r


def int_arg(args: dict[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    v = args.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise CommandError(P.E_BAD_ARGS, f"'{key}' must be an integer in [{lo}, {hi}]")
    return v
