"""`wsfleet.bench.instructions`: the arithmetic, the callgrind file, the report.

A whole measurement runs eight gateways under callgrind (about ten minutes), so
it is run by hand (`python -m wsfleet.bench --instructions`), not here.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from wsfleet.bench import __main__ as bench_main
from wsfleet.bench import instructions
from wsfleet.bench.instructions import Sizes, callgrind_total, per_operation, to_markdown
from wsfleet.bench.servers import GATEWAY, GATEWAY_OFF


def test_a_tripled_workload_and_its_operations() -> None:
    base = Sizes(switches=10, first_visits=4, messages=2, subscribers=50)
    assert base.tripled("switch") == Sizes(30, 4, 2, 50)
    assert base.tripled("first_visit") == Sizes(10, 12, 2, 50)
    assert base.tripled("delivery") == Sizes(10, 4, 6, 50)
    more = base.tripled("delivery")
    assert more.operations("delivery") - base.operations("delivery") == 200  # deliveries


def test_per_operation_cancels_what_both_runs_share() -> None:
    fixed, each = 5_000_000, 1234
    assert per_operation(fixed + 10 * each, fixed + 30 * each, 20) == each
    with pytest.raises(ValueError, match="more operations"):
        per_operation(1, 2, 0)


def test_callgrind_total_of_a_real_run(tmp_path: Path) -> None:
    if shutil.which("valgrind") is None:
        pytest.skip("valgrind is not installed: cannot produce a callgrind file here")
    out = tmp_path / "cg.out"
    subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "/bin/true"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert callgrind_total(out) > 10_000
    broken = tmp_path / "broken.out"
    broken.write_text("events: Ir\n")
    with pytest.raises(ValueError, match="no totals"):
        callgrind_total(broken)


def test_report_gives_ratios_and_the_verdict() -> None:
    doc = {
        "per_operation": {
            GATEWAY_OFF: {"switch": 200_000.0, "first_visit": 300_000.0, "delivery": 9_000.0},
            GATEWAY: {"switch": 220_000.0, "first_visit": 900_000.0, "delivery": 9_000.0},
        },
        "on_off": {"switch": 1.1, "first_visit": 3.0, "delivery": 1.0},
    }
    markdown = to_markdown(doc)
    assert "| warm switch (channel the gateway holds) | 200,000 | 220,000 | 1.100 | yes |" in (
        markdown
    )
    assert "| 300,000 | 900,000 | 3.000 | no |" in markdown


def test_without_valgrind_the_mode_says_why_and_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(instructions, "unavailable", lambda: "valgrind is not installed")
    assert bench_main.main(["--instructions", "--out", str(tmp_path)]) == 2
    assert "cannot count instructions: valgrind is not installed" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
