"""`wsfleet up` fails fast and says what to do when it cannot run."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from wsfleet.cli import main
from wsfleet.localfleet import procs

EXAMPLE = Path(__file__).parents[2] / "examples" / "01-minimal-fleet.yaml"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """`wsfleet up` configures structlog for its process; undo it for the next tests."""
    yield
    structlog.reset_defaults()


def test_missing_binaries_get_an_actionable_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing installed here
    assert main(["up", "-f", str(EXAMPLE), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "redis-server not found on PATH" in err
    assert "apt-get install -y --no-install-recommends redis-server" in err


def test_a_bad_manifest_is_reported_not_raised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text("apiVersion: wsfleet.io/v1alpha1\nkind: WebSocketFleet\nmetadata: {}\n")
    assert main(["up", "-f", str(path)]) == 2
    assert "metadata.name is required" in capsys.readouterr().err


def test_a_taken_port_is_reported_before_anything_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["up", "-f", str(EXAMPLE), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"port {port} on 127.0.0.1 is in use" in err
    assert "--port" in err


def test_descendants_are_found_through_proc(tmp_path: Path) -> None:
    import os
    import signal

    proc = procs.spawn(
        ["sh", "-c", "sleep 60 & wait"], env=dict(os.environ), log_path=tmp_path / "log"
    )
    try:
        from tests.support.waiting import wait_until_sync

        found = wait_until_sync(lambda: len(procs.descendants_of(os.getpid())) >= 2, 10.0)
        assert found
        assert proc.pid in procs.descendants_of(os.getpid())
        assert procs.parent_of(proc.pid) == os.getpid()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # its own process group: sh and sleep
        proc.wait(timeout=10)
    assert procs.parent_of(proc.pid) is None
    assert not procs.send_signal(proc, signal.SIGTERM)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("compress", "expected NAME=VALUE"),
        ("=3", "expected NAME=VALUE"),
        ("nope=1", "unknown load-test options: nope"),
    ],
)
def test_a_bad_load_option_is_reported_before_anything_starts(
    option: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["up", "-f", str(EXAMPLE), "--load", "wedding-season", "--load-option", option])
    assert code == 2
    assert message in capsys.readouterr().err
