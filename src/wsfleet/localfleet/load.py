"""`wsfleet up --load NAME`: drive the load tool's scenario against the fleet, in-process.

The scenario repeats until the fleet stops (a wedding-season run is one
compressed day; the next day starts when it ends), printing a progress line
every few seconds so the fleet's growth and shrinkage can be watched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import structlog

log = structlog.get_logger("wsfleet.localfleet")

LOCAL_DEFAULTS: dict[str, Any] = {
    "duration_s": None,  # one compressed day
    "connections": 300,
    "compress": 288.0,
    "progress_interval_s": 5.0,
    "channel_prefix": "up-",
}
"""A local demo day: 300 connections at night, 3,000 at the evening peak, 5 minutes long."""


class LoadUnavailableError(RuntimeError):
    """The load tool or the named scenario is not available."""


def scenarios() -> list[str]:
    try:
        from wsfleet.loadtest.scenarios import SCENARIOS
    except ImportError as exc:  # pragma: no cover - the load tool ships in this package
        raise LoadUnavailableError(f"the load tool is not available: {exc}") from exc
    return list(SCENARIOS)


def check_load(name: str) -> None:
    """Raise `LoadUnavailableError` unless scenario `name` can run."""
    known = scenarios()
    if name not in known:
        raise LoadUnavailableError(f"unknown load scenario {name!r}; one of {', '.join(known)}")


def load_options(name: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Scenario options for a local run: demo defaults, then `overrides`."""
    options = dict(LOCAL_DEFAULTS) if name == "wedding-season" else {"duration_s": 60.0}
    options.update(overrides or {})
    return options


async def run_load(
    name: str,
    url: str,
    say: Callable[[str], None],
    overrides: Mapping[str, Any] | None = None,
    rounds: int | None = None,
) -> int:
    """Run scenario `name` against `url` again and again (`rounds`; None = until cancelled).

    Returns the number of completed rounds.
    """
    check_load(name)
    from wsfleet.loadtest.engine import format_progress
    from wsfleet.loadtest.runner import run_scenario

    def progress(snap: dict[str, float]) -> None:
        say(f"load {name}: {format_progress(snap)}")

    done = 0
    while rounds is None or done < rounds:
        options = {**load_options(name, overrides), "progress": progress}
        say(f"load {name}: round {done + 1} against {url}")
        report = await run_scenario(name, url, options)
        done += 1
        log.info("load_round_finished", scenario=name, round=done)
        say(f"load {name}: round {done} finished\n{report.summary_text()}")
    return done
