"""Child-process helpers: spawn tied to our lifetime, find descendants.

Gateways run in their own process group (so a terminal's Ctrl-C reaches only
us and we stop them in order) and get ``PR_SET_PDEATHSIG`` so that even a
SIGKILL of the supervisor leaves none of them behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name, use_errno=True) if name else None


_LIBC = _libc()


def set_death_signal(sig: signal.Signals) -> bool:
    """Ask Linux to send `sig` to this process when its parent (thread) dies."""
    if _LIBC is None:
        return False
    return int(_LIBC.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)) == 0


def tie_to(parent: int) -> Callable[[], None] | None:
    """A preexec function: SIGTERM when `parent` dies (and exit if it already has).

    None where Linux's parent-death signal is not available.
    """
    if _LIBC is None:
        return None

    def hook() -> None:
        set_death_signal(signal.SIGTERM)
        if os.getppid() != parent:
            os._exit(1)

    return hook


def spawn(
    argv: Sequence[str], *, env: Mapping[str, str], log_path: Path, tie: bool = True
) -> subprocess.Popen[bytes]:
    """Start `argv` in its own process group, output appended to `log_path`.

    `tie`: the child gets SIGTERM when we die (``PR_SET_PDEATHSIG``). Call
    from the thread that lives as long as the child should (the event loop's
    thread): Linux delivers the death signal when that thread exits.
    """
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(argv),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=tie_to(os.getpid()) if tie else None,
        )


def send_signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> bool:
    """Signal `proc` if it still runs; False when it had already exited."""
    if proc.poll() is not None:
        return False
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
        return True
    return False


def parent_of(pid: int) -> int | None:
    """The parent PID of `pid` from /proc, or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name is in parentheses and may contain spaces
    fields = stat.rsplit(")", 1)[1].split()
    state, ppid = fields[0], int(fields[1])
    if state == "Z":
        return None  # a zombie is exited, only not yet reaped
    return ppid


def descendants_of(pid: int) -> set[int]:
    """Every live process whose ancestry leads to `pid` (Linux /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            ppid = parent_of(int(entry))
            if ppid is not None:
                parents[int(entry)] = ppid
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        children = {child for child, parent in parents.items() if parent in frontier}
        children -= found
        found |= children
        frontier = children
    return found
