"""The bench's forecaster fit-time figure runs and reports (the time itself is not asserted)."""

from __future__ import annotations

from pathlib import Path

from wsfleet.bench.__main__ import main


def test_forecast_fit_figure_is_written(tmp_path: Path) -> None:
    assert main(["--forecast", "--runs", "1", "--out", str(tmp_path), "--name", "fit"]) == 0
    text = (tmp_path / "fit.md").read_text()
    assert "25920 points" in text
    assert "`fit_forecaster`" in text
    assert (tmp_path / "fit.json").exists()
