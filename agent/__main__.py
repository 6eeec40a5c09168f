"""``observer-agent run -- COMMAND ...`` (or ``python -m agent run -- ...``):
run a program with the agent inside it, no code change needed.

The agent is configured by the usual ``OBSERVER_AGENT_*`` variables (see
:func:`agent.start_from_env`); the options below set them for the program.
The launcher puts a ``sitecustomize`` on ``PYTHONPATH`` (any other one is
still run) and replaces itself with COMMAND, which keeps its process id and
receives signals directly. COMMAND may be any program that runs Python with
the environment it is given (``uvicorn app:app``, ``python app.py``, a shell
script); ``python -I``/``-E`` ignore ``PYTHONPATH`` and so the agent.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

import agent

USAGE = "observer-agent run [options] -- COMMAND [ARGS...]"


def build_env(
    environ: dict[str, str],
    *,
    bind: str | None,
    token_file: str | None,
    read_token_file: str | None,
    address_file: str | None,
) -> dict[str, str]:
    """The program's environment: ours, plus the agent's settings and bootstrap."""
    env = dict(environ)
    if bind:
        env["OBSERVER_AGENT_BIND"] = bind
    if token_file:
        env["OBSERVER_AGENT_TOKEN_FILE"] = os.path.abspath(token_file)
    if read_token_file:
        env["OBSERVER_AGENT_READ_TOKEN_FILE"] = os.path.abspath(read_token_file)
    if address_file:
        env["OBSERVER_AGENT_ADDRESS_FILE"] = os.path.abspath(address_file)
    pkg = os.path.dirname(os.path.abspath(agent.__file__))
    paths = [os.path.join(pkg, "_boot"), os.path.dirname(pkg)]
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = os.pathsep.join(paths + ([old] if old else []))
    return env


def check(env: dict[str, str]) -> str | None:
    """What is missing for the agent to start, or None."""
    if not (env.get("OBSERVER_AGENT_BIND") or env.get("OBSERVER_DIAL")):
        return "set OBSERVER_AGENT_BIND (or --bind HOST:PORT), or OBSERVER_DIAL"
    if not (env.get("OBSERVER_AGENT_TOKEN") or env.get("OBSERVER_AGENT_TOKEN_FILE")):
        return "set OBSERVER_AGENT_TOKEN or OBSERVER_AGENT_TOKEN_FILE (or --token-file FILE)"
    return None


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="observer-agent", usage=USAGE, description=__doc__.split("\n\n")[0])
    parser.add_argument("verb", choices=["run"])
    parser.add_argument("--bind", help="HOST:PORT the agent listens on (OBSERVER_AGENT_BIND)")
    parser.add_argument("--token-file", help="file holding the operator token (OBSERVER_AGENT_TOKEN_FILE)")
    parser.add_argument("--read-token-file", help="file holding the read-only token")
    parser.add_argument("--address-file", help="file that receives HOST:PORT once the agent listens")
    if "--" in args:
        cut = args.index("--")
        ours, command = args[:cut], args[cut + 1 :]
    else:
        ours, command = args, []
    opts = parser.parse_args(ours)
    if not command:
        parser.error("no command to run (after --)")
    env = build_env(
        dict(os.environ),
        bind=opts.bind,
        token_file=opts.token_file,
        read_token_file=opts.read_token_file,
        address_file=opts.address_file,
    )
    missing = check(env)
    if missing:
        parser.error(missing)
    exe = shutil.which(command[0], path=env.get("PATH"))
    if exe is None:
        parser.error(f"command not found: {command[0]}")
    os.execve(exe, command, env)
    return 0  # pragma: no cover - execve does not return


if __name__ == "__main__":
    sys.exit(main())
