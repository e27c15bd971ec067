"""`wsfleet loadtest`: refusal of remote targets, multi-process runs, JSON and chart files."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from wsfleet.bench.servers import ServerProcess
from wsfleet.cli import main
from wsfleet.loadtest import REPORT_SCHEMA


def test_cli_refuses_a_non_loopback_target(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["loadtest", "photographer", "--url", "ws://192.0.2.1:8080/ws", "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "refusing non-loopback target" in err
    assert "--allow-remote" in err


def test_cli_rejects_bad_process_counts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["loadtest", "photographer", "--processes", "0", "--quiet"]) == 2
    assert "--processes" in capsys.readouterr().err


def test_cli_runs_two_processes_and_writes_json_and_chart(
    baseline_process: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report_path = tmp_path / "report.json"
    chart_path = tmp_path / "report.png"
    code = main(
        [
            "loadtest",
            "venue-broadcast",
            "--url",
            baseline_process.ws_url,
            "--processes",
            "2",
            "--coordinators",
            "2",
            "--subscribers",
            "10",
            "--publish-rate",
            "20",
            "--duration",
            "1.5",
            "--progress-interval",
            "0.25",
            "--json",
            str(report_path),
            "--chart",
            str(chart_path),
        ]
    )
    assert code == 0
    captured = capsys.readouterr()
    assert "delivered" in captured.err  # the live progress line
    assert "scenario venue-broadcast" in captured.out
    doc = json.loads(report_path.read_text())
    jsonschema.validate(doc, REPORT_SCHEMA)
    assert doc["processes"] == 2
    assert doc["connections"]["opened"] == 22  # 2 x (10 subscribers + 1 coordinator)
    assert doc["messages"]["published"] > 0
    assert doc["messages"]["lost"] == 0
    assert doc["messages"]["delivered"] == doc["messages"]["published"] * 10
    assert chart_path.read_bytes().startswith(b"\x89PNG")
