"""The console script imports only the module of the command it runs."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from wsfleet.cli import SUBCOMMANDS, build_parser, modules_for


def _commands(parser: argparse.ArgumentParser) -> set[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    raise AssertionError("the parser has no subcommands")


def test_the_table_names_exactly_the_commands_the_modules_add() -> None:
    assert _commands(build_parser()) == set(SUBCOMMANDS)
    for command, module in SUBCOMMANDS.items():
        assert modules_for([command]) == [module]
        assert command in _commands(build_parser([command]))


def test_help_or_an_unknown_command_loads_every_module() -> None:
    everything = sorted(set(SUBCOMMANDS.values()))
    assert sorted(modules_for([])) == everything
    assert sorted(modules_for(["--help"])) == everything
    assert sorted(modules_for(["no-such-command"])) == everything


def test_the_gateway_command_loads_neither_numpy_nor_the_operator() -> None:
    probe = (
        "import json, sys\n"
        "from wsfleet.cli import build_parser\n"
        "build_parser(['gateway', '--no-auth']).parse_args(['gateway', '--no-auth'])\n"
        "heavy = ('numpy', 'kopf', 'kubernetes', 'wsfleet_operator')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(out.stdout) == []
