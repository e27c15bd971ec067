"""`wsfleet.bench.instructions`: the arithmetic, the callgrind file, the report.

A whole measurement runs eight gateways under callgrind (about fifteen minutes), so
it is run by hand (`python -m wsfleet.bench --instructions`), not here.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import redis

from wsfleet.bench import __main__ as bench_main
from wsfleet.bench import instructions
from wsfleet.bench.instructions import Sizes, callgrind_total, per_operation, to_markdown
from wsfleet.bench.servers import GATEWAY, GATEWAY_OFF
from wsfleet.bench.suite import gateway_env, secret_for
from wsfleet.services import RedisServer


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


def _callgrind_files(directory: Path) -> dict[str, Path]:
    """Callgrind's files in `directory` by suffix ("1" for the first dump)."""
    return {path.name.rsplit(".", 1)[-1]: path for path in directory.glob("callgrind-*")}


async def test_a_counted_run_ends_at_its_checkpoint_from_an_empty_redis(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """One real features-on gateway under callgrind, a few operations: the count is
    the one callgrind wrote at the checkpoint (before the connections closed), and
    what an earlier run left in Redis is gone before the gateway starts."""
    if instructions.unavailable() is not None:
        pytest.skip(f"cannot count instructions here: {instructions.unavailable()}")
    leftover = redis.Redis.from_url(redis_server.url)
    try:
        leftover.set("left-by-an-earlier-run", "1")
        total = await instructions.count_run(
            GATEWAY,
            Sizes(switches=2, first_visits=1, messages=1, subscribers=3),
            redis_server.url,
            gateway_env(GATEWAY),
            secret_for(GATEWAY),
            tmp_path,
        )
        assert leftover.get("left-by-an-earlier-run") is None
    finally:
        leftover.close()
    dumps = _callgrind_files(tmp_path)
    assert set(dumps) >= {"1"}, "no dump written at the checkpoint"
    assert total == callgrind_total(dumps["1"])
    at_exit = next(path for suffix, path in dumps.items() if suffix != "1")
    assert callgrind_total(at_exit) > 0  # teardown, counted apart and not used
