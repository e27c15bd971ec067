"""Generate the values table of charts/wsfleet/README.md from values.yaml (helm-docs style).

A value is documented by a `# -- text` comment (continued by further `#` lines) right
above its key, as helm-docs reads them. The table replaces everything between the
`<!-- values:start -->` and `<!-- values:end -->` markers of the README.

    python hack/chart_readme.py           rewrite the README
    python hack/chart_readme.py --check   exit 1 when the README is stale
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "wsfleet"
START, END = "<!-- values:start -->", "<!-- values:end -->"
KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?P<rest>.*)$")


def documented_keys(text: str) -> list[tuple[str, str]]:
    """(dotted key, description) for every `# --` comment, in file order."""
    out: list[tuple[str, str]] = []
    path: list[tuple[int, str]] = []
    pending: list[str] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = [stripped[4:].strip()]
            continue
        if stripped.startswith("#"):
            if pending is not None:
                pending.append(stripped[1:].strip())
            continue
        match = KEY.match(line)
        if match is None:
            continue
        indent = len(match["indent"])
        while path and path[-1][0] >= indent:
            path.pop()
        path.append((indent, match["key"]))
        if pending is not None:
            out.append((".".join(k for _, k in path), " ".join(pending)))
            pending = None
    return out


def lookup(values: dict[str, Any], dotted: str) -> Any:
    node: Any = values
    for part in dotted.split("."):
        node = node[part]
    return node


def type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "object"


def table(values_text: str) -> str:
    values = yaml.safe_load(values_text)
    rows = ["| Key | Type | Default | Description |", "|-----|------|---------|-------------|"]
    for key, desc in documented_keys(values_text):
        value = lookup(values, key)
        default = json.dumps(value, separators=(",", ":")).replace("|", "\\|")
        text = desc.replace("|", "\\|")
        rows.append(f"| `{key}` | {type_name(value)} | `{default}` | {text} |")
    return "\n".join(rows)


def render(readme: str, values_text: str) -> str:
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table(values_text)}\n{END}{tail}"


def main(argv: list[str]) -> int:
    readme_path = CHART / "README.md"
    readme = readme_path.read_text()
    fresh = render(readme, (CHART / "values.yaml").read_text())
    if "--check" in argv:
        if fresh != readme:
            print(
                "error: charts/wsfleet/README.md values table is stale; run hack/sync-chart.sh",
                file=sys.stderr,
            )
            return 1
        return 0
    readme_path.write_text(fresh)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
