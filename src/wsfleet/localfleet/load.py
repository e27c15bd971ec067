"""`wsfleet up --load NAME`: drive the load tool's scenario against the fleet.

The load runs in a child process of its own (`LoadProcess`), not on the
event loop of `wsfleet up`: thousands of simulated users there would starve
the autoscaler, the supervisor and the dashboard that the demo is about, and
a child can always be stopped (SIGTERM ends the run at once, SIGKILL after
`LOAD_STOP_S`). The child (``python -m wsfleet.localfleet.load``) repeats the
scenario until stopped (a wedding-season run is one compressed day; the next
day starts when it ends) and prints a progress line every few seconds, which
`wsfleet up` relays.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog

from wsfleet.localfleet import procs

log = structlog.get_logger("wsfleet.localfleet")

DEMO_CONNECTIONS_PER_POD = 100
"""The demo's capacity of one gateway (the manifest's `targets.connectionsPerPod` is
meant for a real pod: 1,000 by default, more than this machine's load can fill)."""

LOCAL_DEFAULTS: dict[str, Any] = {
    "duration_s": None,  # one compressed day
    "connections": 50,
    "compress": 480.0,
    "start_hour": 6.0,
    "progress_interval_s": 5.0,
    "channel_prefix": "up-",
}
"""A demo day of 3 minutes (an hour in 7.5 s) from 06:00: 50 connections at night,
200 in the suppliers' day, 500 at the couples' evening peak (18:00-20:00). At
`DEMO_CONNECTIONS_PER_POD` (80 % of it per gateway) that is 2 gateways at night,
3 by day and 7 at the peak: the fleet grows and shrinks within one day."""

LOAD_STOP_S = 3.0
"""How long the load child gets to end its run after SIGTERM before it is killed."""
TOKEN_ENV = "WSFLEET_UP_LOAD_TOKEN"
"""The child's bearer token comes in this variable (never on its command line)."""


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
    stop: asyncio.Event | None = None,
) -> int:
    """Run scenario `name` against `url` again and again (`rounds`; None = until stopped).

    `stop` ends the round under way (its report is printed) and the loop.
    Returns the number of rounds run.
    """
    check_load(name)
    from wsfleet.loadtest.engine import format_progress
    from wsfleet.loadtest.runner import run_scenario

    def progress(snap: dict[str, float]) -> None:
        say(f"load {name}: {format_progress(snap)}")

    done = 0
    while (rounds is None or done < rounds) and not (stop is not None and stop.is_set()):
        options = {**load_options(name, overrides), "progress": progress, "stop": stop}
        say(f"load {name}: round {done + 1} against {url}")
        report = await run_scenario(name, url, options)
        done += 1
        log.info("load_round_finished", scenario=name, round=done)
        say(f"load {name}: round {done} finished\n{report.summary_text()}")
    return done


class LoadProcess:
    """The load child of `wsfleet up`: started, its output relayed, stopped first."""

    def __init__(
        self,
        name: str,
        url: str,
        say: Callable[[str], None],
        overrides: Mapping[str, Any] | None = None,
        token: str | None = None,
    ) -> None:
        self.name = name
        self.url = url
        self.say = say
        self.overrides = dict(overrides or {})
        self.token = token
        self.proc: asyncio.subprocess.Process | None = None
        self.stopping = False
        self._relay: asyncio.Task[None] | None = None

    def argv(self) -> list[str]:
        options = json.dumps(self.overrides, separators=(",", ":"))
        module = "wsfleet.localfleet.load"
        return [sys.executable, "-m", module, self.name, "--url", self.url, "--options", options]

    async def start(self) -> None:
        check_load(self.name)
        env = dict(os.environ)
        env.pop(TOKEN_ENV, None)
        if self.token is not None:
            env[TOKEN_ENV] = self.token
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv(),
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,  # the load tool's own warnings go where ours go
            start_new_session=True,  # a terminal's Ctrl-C reaches us, and we stop it first
            preexec_fn=procs.tie_to(os.getpid()),  # and it goes when we go, even on SIGKILL
        )
        log.info("load_started", scenario=self.name, pid=self.proc.pid)
        self._relay = asyncio.create_task(self._relay_output(), name="load-output")

    async def _relay_output(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.say(line.decode(errors="replace").rstrip("\n"))
        code = await self.proc.wait()
        if not self.stopping:
            log.warning("load_exited", scenario=self.name, exit_code=code)
            self.say(f"load stopped: the load process exited with {code} (the fleet keeps running)")

    async def stop(self, timeout_s: float = LOAD_STOP_S) -> None:
        """End the run (SIGTERM), kill it after `timeout_s`, and wait until it is gone."""
        self.stopping = True
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(timeout_s):
                    await proc.wait()
            except TimeoutError:
                log.warning("load_killed", scenario=self.name, pid=proc.pid, after_s=timeout_s)
                self.kill()
                await proc.wait()
        if self._relay is not None:
            await self._relay  # the output ends with the process (or with its pipe's writers)
            self._relay = None

    def kill(self) -> None:
        """SIGKILL the load at once (a second Ctrl-C)."""
        self.stopping = True
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()


# -- the child ---------------------------------------------------------------


def _say(line: str) -> None:
    print(line, flush=True)


async def _serve_load(name: str, url: str, overrides: Mapping[str, Any]) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run_load(name, url, _say, overrides, stop=stop)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The load child: run scenario NAME until SIGTERM (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m wsfleet.localfleet.load")
    parser.add_argument("scenario")
    parser.add_argument("--url", required=True)
    parser.add_argument("--options", default="{}", help="scenario options as a JSON object")
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = json.loads(args.options)
    token = os.environ.get(TOKEN_ENV)
    if token:
        overrides["token"] = token
    import uvloop

    return uvloop.run(_serve_load(args.scenario, args.url, overrides))


if __name__ == "__main__":
    raise SystemExit(main())
