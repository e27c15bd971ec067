"""The `wsfleet` console script: one entry point, one subcommand per tool.

Each subcommand lives with the code it drives and exposes
`add_parser(subparsers)`; the parser it adds sets `func`, called with the
parsed arguments and returning the exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

# (module, attribute) pairs; each module owns its subcommand(s).
_SUBCOMMANDS: tuple[str, ...] = (
    "wsfleet_gateway.cli",
    "wsfleet_operator.cli",
    "wsfleet_operator.forecast_cli",
    "wsfleet.loadtest.cli",
    "wsfleet.localfleet.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsfleet",
        description="WebSocket channel gateway, its Kubernetes operator, and tools.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module_name in _SUBCOMMANDS:
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
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
