"""A watchdog child process: if `wsfleet up` dies without cleaning up, stop what it started.

Gateways are tied to `wsfleet up` by ``PR_SET_PDEATHSIG`` themselves; Redis and
Prometheus are started by `wsfleet.services`, which does not do that. So the
local fleet starts this reaper (itself tied to it by the death signal) with
their PIDs: killed with SIGKILL, `wsfleet up` cannot clean up, but the reaper
then gets SIGTERM and stops them. On a normal stop the fleet SIGKILLs the
reaper first, so it does nothing.

    python -m wsfleet.localfleet.reaper --parent PID PID:NAME [PID:NAME ...]

A PID is only signalled while its command line still contains NAME (a reused
PID is left alone).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from wsfleet.localfleet import procs


def cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def parse_targets(values: Sequence[str]) -> list[tuple[int, str]]:
    targets = []
    for value in values:
        pid, _, name = value.partition(":")
        targets.append((int(pid), name))
    return targets


def stop_all(targets: list[tuple[int, str]], timeout_s: float = 10.0) -> list[int]:
    """SIGTERM every target still running as NAME, SIGKILL at `timeout_s`; PIDs signalled."""
    alive = [pid for pid, name in targets if name and name in cmdline(pid)]
    for pid in alive:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(cmdline(pid) for pid in alive):
        time.sleep(0.05)
    for pid in alive:
        if cmdline(pid):
            _signal(pid, signal.SIGKILL)
    return alive


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wsfleet.localfleet.reaper")
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("targets", nargs="+")
    args = parser.parse_args(argv)
    targets = parse_targets(args.targets)
    wanted = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
    signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
    procs.set_death_signal(signal.SIGTERM)  # only now: no signal can be missed
    if os.getppid() == args.parent:  # else the parent died before we were tied to it
        signal.sigwait(wanted)
    stop_all(targets)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
