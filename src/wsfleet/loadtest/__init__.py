"""wsfleet's load tool: realistic wedding-platform load against any wsfleet endpoint.

In-process use (the local fleet does this)::

    report = await run_scenario("wedding-season", "ws://127.0.0.1:8080/ws",
                                {"connections": 50, "compress": 2880})

`wsfleet loadtest --help` is the command line; `run_processes` splits a run
over several processes.
"""

from wsfleet.loadtest.options import ScenarioOptions
from wsfleet.loadtest.report import REPORT_SCHEMA, Report
from wsfleet.loadtest.runner import run_scenario
from wsfleet.loadtest.scenarios import SCENARIOS
from wsfleet.loadtest.shape import RemoteTargetError, check_target

__all__ = [
    "REPORT_SCHEMA",
    "SCENARIOS",
    "RemoteTargetError",
    "Report",
    "ScenarioOptions",
    "check_target",
    "run_scenario",
]
