"""The `wsfleet` console script: one entry point, one subcommand per tool.

Each subcommand lives with the code it drives and exposes
`add_parser(subparsers)`; the parser it adds sets `func`, called with the
parsed arguments and returning the exit code.

Only the module of the command run is imported: ``wsfleet gateway`` must not
load the operator's libraries (the forecast's numpy starts OpenBLAS threads,
kopf and the Kubernetes client cost memory and start-up time in every pod).
Help, or a command not in the table, imports them all.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

SUBCOMMANDS: dict[str, str] = {
    "gateway": "wsfleet_gateway.cli",
    "operator": "wsfleet_operator.cli",
    "forecast": "wsfleet_operator.forecast.cli",
    "plan": "wsfleet_operator.forecast.cli",
    "loadtest": "wsfleet.loadtest.cli",
    "up": "wsfleet.localfleet.cli",
}
"""Each command and the module that adds it (a test checks the modules add exactly these)."""


def modules_for(argv: Sequence[str] | None) -> list[str]:
    """The modules to import for `argv`: the command's own, or all when it is not known."""
    command = argv[0] if argv else None
    if command in SUBCOMMANDS:
        return [SUBCOMMANDS[command]]
    return list(dict.fromkeys(SUBCOMMANDS.values()))


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for `argv` (None: every command; see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="wsfleet",
        description="WebSocket channel gateway, its Kubernetes operator, and tools.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module_name in modules_for(argv):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # that tool is not part of this build yet
        add: Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]
        add = module.add_parser
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
