"""Each part's third-party imports are declared in its own extra (pyproject), and every
declared runtime dependency is imported somewhere: an image built with only its extra
(Dockerfile) has what its code imports, and carries nothing that nothing uses."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PACKAGES = {
    "gateway": ROOT / "gateway" / "wsfleet_gateway",
    "operator": ROOT / "operator" / "wsfleet_operator",
    "local": ROOT / "src" / "wsfleet",
}
OURS = {"wsfleet", "wsfleet_gateway", "wsfleet_operator"}
OPTIONAL = {"matplotlib": "plot"}
"""Imported only inside the functions that need them, from an extra of their own."""
COMES_WITH = {"pydantic-core": "pydantic"}
"""Imported by name, installed and pinned by another dependency."""


def distribution(requirement: str) -> str:
    name = re.split(r"[\[<>=;! ]", requirement, maxsplit=1)[0]
    return name.lower().replace("_", "-")


def requirements(extra: str | None) -> set[str]:
    """The distributions `wsfleet[extra]` installs (extras of extras followed)."""
    found = {distribution(r) for r in PROJECT["dependencies"]}
    if extra is None:
        return found
    for req in PROJECT["optional-dependencies"][extra]:
        if req.startswith("wsfleet["):
            for inner in req[len("wsfleet[") : -1].split(","):
                found |= requirements(inner)
        else:
            found.add(distribution(req))
    return found


def _imports(nodes: list[ast.stmt] | list[ast.AST]) -> set[str]:
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names - OURS - set(sys.stdlib_module_names) - {"__future__"}


def imported_modules(package: Path, lazy: bool = True) -> set[str]:
    """Top-level names of the modules the package's code imports (with `lazy`, also those
    imported inside functions)."""
    names: set[str] = set()
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text())
        names |= _imports(list(ast.walk(tree)) if lazy else _module_level(tree))
    return names


def _module_level(tree: ast.Module) -> list[ast.AST]:
    """Statements run at import time: the module's own, and those under if/try at its top."""
    out: list[ast.AST] = []
    todo: list[ast.stmt] = list(tree.body)
    while todo:
        node = todo.pop()
        out.append(node)
        if isinstance(node, ast.If | ast.Try):
            todo += [*node.body, *node.orelse]
    return out


def imported_distributions(package: Path) -> set[str]:
    by_module = packages_distributions()
    out = set()
    for module in imported_modules(package) - set(OPTIONAL):
        dists = by_module.get(module)
        assert dists, f"{package.name} imports {module}, which no installed distribution provides"
        out |= {d.lower().replace("_", "-") for d in dists}
    return {COMES_WITH.get(d, d) for d in out}


@pytest.mark.parametrize("extra", sorted(PACKAGES))
def test_every_import_is_in_the_parts_own_extra(extra: str) -> None:
    missing = imported_distributions(PACKAGES[extra]) - requirements(extra)
    assert not missing, f"wsfleet[{extra}] lacks {sorted(missing)}, which its code imports"


@pytest.mark.parametrize("package", sorted(PACKAGES.values()), ids=sorted(PACKAGES))
def test_optional_modules_are_imported_only_where_used(package: Path) -> None:
    eager = imported_modules(package, lazy=False) & set(OPTIONAL)
    assert not eager, f"{package.name} imports {sorted(eager)} at import time"
    for module, extra in OPTIONAL.items():
        assert module in {distribution(r) for r in PROJECT["optional-dependencies"][extra]}


def test_the_images_extras_stay_apart() -> None:
    gateway, operator = requirements("gateway"), requirements("operator")
    assert not {"kopf", "numpy", "matplotlib"} & gateway
    assert not {"picows", "uvloop", "pyjwt", "matplotlib"} & operator


def test_every_runtime_dependency_is_used() -> None:
    used = set().union(*(imported_distributions(p) for p in PACKAGES.values()))
    declared = requirements("local")
    unused = declared - used - {"wsfleet", "hiredis"} - set(OPTIONAL)
    assert not unused, f"declared but imported nowhere: {sorted(unused)}"
    assert "hiredis" in imported_modules(PACKAGES["gateway"])  # resp.py's reply parser
    assert "kubernetes" not in declared  # kopf logs in by itself
