"""`wsfleet forecast backtest|predict` and `wsfleet plan` on real files (and a real Prometheus)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from wsfleet_operator.forecast.io import read_csv, write_csv

from wsfleet.cli import main

from .conftest import History
from .synthetic import make_series

ROOT = Path(__file__).resolve().parents[2]
WEDDINGS = ROOT / "examples" / "02-wedding-season-fleet.yaml"


@pytest.fixture(scope="module")
def iso_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    s = make_series(days=21)
    path = tmp_path_factory.mktemp("csv") / "connections.csv"
    write_csv(path, s.t, s.y)
    return path


@pytest.fixture(scope="module")
def unix_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    s = make_series(days=10, step=600.0, outliers=False)
    path = tmp_path_factory.mktemp("csv") / "unix.csv"
    rows = ["ts,value"] + [
        f"{int(t)},{'' if np.isnan(v) else round(v, 2)}" for t, v in zip(s.t, s.y, strict=True)
    ]
    path.write_text("\n".join(rows) + "\n")
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_csv_round_trip(iso_csv: Path) -> None:
    series = read_csv(iso_csv)
    assert not series.numeric_timestamps
    assert series.timestamps.size == 21 * 288
    assert np.isnan(series.values).sum() > 0  # the gaps survive as NaN


def test_backtest_csv_table_and_json(iso_csv: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "forecast", "backtest", "--csv", str(iso_csv))
    assert code == 0
    assert "forecaster (p50)" in out
    assert "p90 coverage" in out
    assert "naive: last week" in out
    assert "naive: last day" in out
    assert "forecast weight 1.00" in out
    code, out, _ = _run(capsys, "forecast", "backtest", "--csv", str(iso_csv), "--json")
    assert code == 0
    report = json.loads(out)
    assert report["origins"] == 7
    assert report["model"]["accuracy"] > report["seasonalNaiveWeek"]["accuracy"]
    assert report["model"]["accuracy"] > report["seasonalNaiveDay"]["accuracy"]
    assert report["weight"] == 1.0


def test_backtest_unix_csv_with_fleet_priors(
    unix_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["forecast", "backtest", "--csv", str(unix_csv), "-f", str(WEDDINGS), "--json"]
    code, out, _ = _run(capsys, *argv, "--horizon", "12h", "--origins", "4")
    assert code == 0
    report = json.loads(out)
    assert report["stepSeconds"] == 600.0
    assert report["horizonSeconds"] == 43200.0
    assert report["threshold"] == 0.85
    assert report["model"]["accuracy"] >= 0.85


def test_backtest_from_a_real_prometheus(
    history_prometheus: History, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["forecast", "backtest", "--prometheus", history_prometheus.url]
    argv += ["--query", history_prometheus.query, "--range", "14d", "--step", "5m", "--json"]
    code, out, err = _run(capsys, *argv)
    assert code == 0, err
    report = json.loads(out)
    assert report["model"]["points"] >= 6 * 288
    assert report["model"]["accuracy"] >= 0.85
    assert report["model"]["accuracy"] > report["seasonalNaiveDay"]["accuracy"] - 0.01


def test_predict_json_at_the_input_interval(
    iso_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(
        capsys, "forecast", "predict", "--csv", str(iso_csv), "--horizon", "30m", "--json"
    )
    assert code == 0
    rows = json.loads(out)
    assert len(rows) == 6
    last = read_csv(iso_csv).timestamps[-1]
    stamps = [
        datetime.fromisoformat(r["timestamp"].replace("Z", "+00:00")).timestamp() for r in rows
    ]
    assert stamps == [last + 300 * k for k in range(1, 7)]
    assert all(r["value"] > 0 for r in rows)
    assert rows[0]["timestamp"].endswith("Z")


def test_predict_unix_table_and_long_horizon(
    unix_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(capsys, "forecast", "predict", "--csv", str(unix_csv), "--horizon", "1d")
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].startswith("timestamp")
    assert len(lines) == 1 + 144
    first = lines[1].split()
    assert first[0].isdigit()  # unix seconds in, unix seconds out
    code, out, _ = _run(
        capsys, "forecast", "predict", "--csv", str(unix_csv), "--horizon", "12mo", "--json"
    )
    assert code == 0
    rows = json.loads(out)
    last = float(read_csv(unix_csv).timestamps[-1])
    year_later = datetime.fromtimestamp(last, UTC).replace(
        year=datetime.fromtimestamp(last, UTC).year + 1
    )
    assert len(rows) == round((year_later.timestamp() - last) / 600)  # a calendar year
    assert all(isinstance(r["timestamp"], int) for r in rows[:10])
    assert all(r["p10"] <= r["p50"] == r["value"] <= r["p90"] for r in rows)


def test_predict_monthly_keeps_the_calendar(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ten years of monthly values on the 1st: 12mo and 1y give the next 12 month starts."""
    path = tmp_path / "monthly.csv"
    months = [datetime(2010 + m // 12, m % 12 + 1, 1, tzinfo=UTC) for m in range(120)]
    season = [1.0, 0.9, 1.0, 1.1, 1.2, 1.6, 1.5, 1.3, 1.2, 1.1, 1.0, 1.2]
    lines = ["timestamp,value"] + [
        f"{d:%Y-%m-%d},{100 * 1.01**i * season[d.month - 1]:.3f}" for i, d in enumerate(months)
    ]
    path.write_text("\n".join(lines) + "\n")
    for horizon in ("12mo", "1y"):
        code, out, _ = _run(
            capsys, "forecast", "predict", "--csv", str(path), "--horizon", horizon, "--json"
        )
        assert code == 0
        rows = json.loads(out)
        assert [r["timestamp"] for r in rows] == [
            f"2020-{m:02d}-01T00:00:00Z" for m in range(1, 13)
        ]
    june, january = rows[5]["value"], rows[0]["value"]
    # the yearly shape and the trend survive: June 1.6/1.0 of January, 1 %/month growth
    assert june / january == pytest.approx(1.6 * 1.01**5, rel=0.03)
    assert january == pytest.approx(100 * 1.01**120, rel=0.03)


def test_plan_june_table_and_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "plan.png"
    code, out, _ = _run(capsys, "plan", "-f", str(WEDDINGS), "--month", "6", "--png", str(png))
    assert code == 0
    lines = out.strip().splitlines()
    assert "replica schedule for 30 days from" in lines[0]
    assert "-06-01" in lines[0]
    daily = [line.split() for line in lines[2:32]]
    assert [r[0][5:] for r in daily] == [f"06-{d:02d}" for d in range(1, 31)]
    busiest = next(i for i, line in enumerate(lines) if line.startswith("busiest day: "))
    assert "-06-" in lines[busiest]
    rows = [line.split() for line in lines[busiest + 3 : busiest + 27]]
    assert [r[0] for r in rows] == [f"{h:02d}:00" for h in range(24)]
    replicas = {r[0]: int(r[3]) for r in rows}
    # June x10 on a baseline of half the min fleet, x2 in the 18-20 peak (Europe/London)
    assert replicas["19:00"] > replicas["04:00"] >= 2
    assert max(replicas.values()) <= 20
    # the busiest day needs the most replicas of the month
    assert max(replicas.values()) == max(int(r[2].split("-")[-1]) for r in daily)
    assert lines[-1] == f"plot written to {png}"
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    image = matplotlib.image.imread(png)
    assert image.shape[:2] == (800, 1100)
    assert float(np.std(image)) > 0.05  # something was drawn


def test_plan_month_from_history_with_band(
    iso_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "month.png"
    argv = ["plan", "-f", str(WEDDINGS), "--csv", str(iso_csv), "--month", "6"]
    code, out, _ = _run(capsys, *argv, "--json")
    assert code == 0
    plan = json.loads(out)
    assert plan["month"].endswith("-06")
    assert len(plan["daily"]) == 30
    assert all(r["peakP90"] >= r["peakForecast"] for r in plan["daily"])
    assert len(plan["hours"]) == 24
    assert plan["busiestDay"] in {r["day"] for r in plan["daily"]}
    code, out, _ = _run(capsys, *argv, "--png", str(png))
    assert code == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plan_a_season(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "season.png"
    argv = ["plan", "-f", str(WEDDINGS), "--day", "2027-05-01", "--days", "92"]
    code, out, _ = _run(capsys, *argv, "--json")
    assert code == 0
    plan = json.loads(out)
    assert plan["days"] == 92
    rows = plan["daily"]
    assert [r["day"] for r in rows[:2]] == ["2027-05-01", "2027-05-02"]
    assert len(rows) == 92
    peak = {r["day"]: r["peakForecast"] for r in rows}
    # June x10 at mid-month, against the base months on either side
    assert peak["2027-06-16"] > 5 * peak["2027-05-01"]
    assert peak["2027-06-16"] > 5 * peak["2027-07-31"]
    assert all(2 <= r["minReplicas"] <= r["maxReplicas"] <= 20 for r in rows)
    code, out, _ = _run(capsys, *argv, "--png", str(png))
    assert code == 0
    assert "replica schedule for 92 days from 2027-05-01" in out
    assert "2027-07-31" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plan_from_history_as_json(iso_csv: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "plan", "-f", str(WEDDINGS), "--csv", str(iso_csv), "--json")
    assert code == 0
    plan = json.loads(out)
    assert plan["fleet"] == "weddings"
    last = read_csv(iso_csv).timestamps[-1]
    assert plan["day"] == datetime.fromtimestamp(last + 86400, UTC).date().isoformat()
    assert len(plan["hours"]) == 24
    assert 0 < plan["weight"] <= 1.0
    code, out, _ = _run(
        capsys, "plan", "-f", str(WEDDINGS), "--day", "2026-12-25", "--baseline", "8000"
    )
    assert code == 0
    assert "2026-12-25" in out
    assert " 20" in out  # 8000 connections x peak x headroom: capped at max 20


def test_errors_are_reported_with_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "nope.csv")
    assert _run(capsys, "forecast", "backtest", "--csv", missing)[0] == 2
    assert _run(capsys, "forecast", "backtest", "--prometheus", "http://127.0.0.1:1")[0] == 2
    short = tmp_path / "short.csv"
    short.write_text("timestamp,value\n2024-01-01T00:00:00,5\n2024-01-01T00:05:00,6\n")
    assert _run(capsys, "forecast", "backtest", "--csv", str(short))[0] == 1
    empty = tmp_path / "empty.csv"
    empty.write_text("timestamp,value\n2024-01-01T00:00:00,0\n")
    assert _run(capsys, "forecast", "predict", "--csv", str(empty), "--horizon", "1h")[0] == 1
    assert _run(capsys, "forecast", "predict", "--csv", str(short), "--horizon", "soon")[0] == 2
    code, _, err = _run(
        capsys,
        "forecast",
        "predict",
        "--csv",
        str(short),
        "--horizon",
        "1h",
        "--timezone",
        "Mars/Olympus",
    )
    assert code == 2
    assert "unknown timezone" in err
    noheader = tmp_path / "noheader.csv"
    noheader.write_text("justonecolumn\n")
    assert _run(capsys, "forecast", "predict", "--csv", str(noheader), "--horizon", "1h")[0] == 2
    not_a_fleet = tmp_path / "cm.yaml"
    not_a_fleet.write_text("kind: ConfigMap\n")
    code, _, err = _run(capsys, "plan", "-f", str(not_a_fleet))
    assert code == 2
    assert "no WebSocketFleet" in err


def test_console_script_end_to_end(iso_csv: Path) -> None:
    script = Path(sys.executable).parent / "wsfleet"
    done = subprocess.run(
        [str(script), "forecast", "predict", "--csv", str(iso_csv), "--horizon", "1h", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)) == 12
