"""``python -m bench <name> [options]``: run one benchmark (``-h`` after the name for its options)."""

from __future__ import annotations

import importlib
import sys

from bench import available


def usage() -> str:
    names = ", ".join(available())
    return f"usage: python -m bench <name> [options]\n  benchmarks: {names}\n  e.g. python -m bench actors --quick"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help"):
        print(usage())
        return 0
    if not args or args[0] not in available():
        if args:
            print(f"unknown benchmark: {args[0]!r}", file=sys.stderr)
        print(usage(), file=sys.stderr)
        return 2
    module = importlib.import_module(f"bench.{args[0]}")
    rc: int = module.main(args[1:])
    return rc


if __name__ == "__main__":
    sys.exit(main())
