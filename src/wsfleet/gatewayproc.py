"""Server child processes that announce readiness with one JSON log line.

The one launcher of ``wsfleet gateway`` as a child process (`gateway_process`), used by
the benchmark (`wsfleet.bench.servers`) and the tests; `ServerProcess` also runs the
bench's reference server. Each child:

- gets this process's environment, minus the prefixes in ``env_drop`` (the bench's
  accuracy checks drop ``COVERAGE_`` to measure untraced; by default it is kept, so the
  ``patch = ["subprocess"]`` coverage of a test run follows the child), plus ``env``;
- may be pinned to one CPU (``cpu``, the bench's server/load split);
- writes stdout and stderr to a temporary file, not a pipe: nothing has to drain a pipe
  (no reader thread competing with a load process for the GIL), and a chatty child never
  blocks. `wait_ready` reads the file until the ready event's JSON line; `log_tail` reads
  it again later (what a test prints when the child died).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from wsfleet.services import stop_process

GATEWAY_READY = "gateway_ready"
"""The gateway's ready event: ``{"event": "gateway_ready", "ws": ..., "admin": ..., ...}``."""
POLL_S = 0.05
"""Interval between reads of a starting child's output file (looking for its ready line)."""


def pin_to(cpu: int | None) -> Callable[[], None] | None:
    """A preexec_fn pinning the child to `cpu` (None: no pinning)."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return None
    target = {cpu}

    def pin() -> None:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, target)

    return pin


def rss_bytes(pid: int) -> int:
    """Resident set size of process `pid` (Linux /proc)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) process `pid` has used so far, in seconds.

    Reads the process's CPU clock (Linux: the clock id glibc's ``clock_getcpuclockid``
    gives, nanosecond resolution); where that fails, /proc's tick counts (10 ms steps).
    """
    try:
        return time.clock_gettime(((~pid) << 3) | 2)  # MAKE_PROCESS_CPUCLOCK(pid, SCHED)
    except OSError:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_env(env: dict[str, str], drop: tuple[str, ...] = ()) -> dict[str, str]:
    """This process's environment without the `drop` prefixes, then `env` on top."""
    inherited = {k: v for k, v in os.environ.items() if not (drop and k.startswith(drop))}
    return {**inherited, **env}


@dataclass
class ServerProcess:
    """One server as a child process: `start` (or `launch`, then `wait_ready`), `stop`."""

    kind: str
    argv: list[str]
    ready_event: str
    env: dict[str, str] = field(default_factory=dict)
    cpu: int | None = None
    proc: subprocess.Popen[str] | None = None
    ready: dict[str, Any] = field(default_factory=dict)
    """The ready line, parsed (empty until `wait_ready` saw it)."""
    output: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=200))
    """The last lines read while waiting for the ready line."""
    env_drop: tuple[str, ...] = ()
    """Prefixes of inherited env vars not passed on (e.g. ``COVERAGE_``: measure untraced)."""
    log_path: str | None = None
    """The child's stdout and stderr (a temporary file, removed by `stop`)."""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def ws_url(self) -> str:
        if "ws" in self.ready:
            return str(self.ready["ws"])
        return f"ws://127.0.0.1:{self.ready['port']}/ws"

    @property
    def admin_url(self) -> str | None:
        admin = self.ready.get("admin")
        return str(admin) if admin else None

    def launch(self) -> ServerProcess:
        """Start the child and return at once (several children can then start together)."""
        fd, path = tempfile.mkstemp(prefix=f"wsfleet-{self.kind}-", suffix=".log")
        self.log_path = path
        with os.fdopen(fd, "w") as sink:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                env=child_env(self.env, self.env_drop),
                preexec_fn=pin_to(self.cpu),  # only sets CPU affinity
            )
        return self

    def wait_ready(self, timeout_s: float = 60.0) -> ServerProcess:
        """Block until the ready line; on exit or timeout stop the child and raise."""
        if self.proc is None or self.log_path is None:
            raise RuntimeError(f"{self.kind} server: launch() before wait_ready()")
        deadline = time.monotonic() + timeout_s
        with open(self.log_path, encoding="utf-8", errors="replace") as source:
            pending = ""
            while True:
                chunk = source.read()
                pending += chunk
                *lines, pending = pending.split("\n")
                if any(self._seen(line) for line in lines):
                    return self
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    tail = "\n".join(self.output)
                    self.stop()
                    raise RuntimeError(f"{self.kind} server did not become ready:\n{tail}")
                if not chunk:
                    time.sleep(POLL_S)  # polling the child's output file for its ready line

    def start(self, timeout_s: float = 60.0) -> ServerProcess:
        return self.launch().wait_ready(timeout_s)

    def _seen(self, line: str) -> bool:
        """Keep `line`; True (and `ready` set) when it is the ready event."""
        self.output.append(line.rstrip())
        if self.ready:
            return False
        with contextlib.suppress(ValueError):
            doc = json.loads(line)
            if isinstance(doc, dict) and doc.get("event") == self.ready_event:
                self.ready = doc
                return True
        return False

    def log_tail(self, lines: int = 20) -> list[str]:
        """The last `lines` lines the child wrote so far (while it has not been stopped)."""
        if self.log_path is None:
            return list(self.output)[-lines:]
        with open(self.log_path, encoding="utf-8", errors="replace") as source:
            return list(collections.deque(source.read().splitlines(), maxlen=lines))

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the server has used so far."""
        return cpu_seconds(self.pid)

    def stop(self) -> None:
        """SIGTERM (SIGKILL after 10 s), then remove the output file."""
        if self.proc is not None:
            stop_process(self.proc)  # type: ignore[arg-type]
            self.proc = None
        if self.log_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.log_path)
            self.log_path = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def gateway_argv(redis_url: str | None = None, extra: Sequence[str] = ()) -> list[str]:
    """``python -m wsfleet gateway`` on loopback, free ports (the ready line says which)."""
    argv = [sys.executable, "-m", "wsfleet", "gateway", "--host", "127.0.0.1"]
    argv += ["--port", "0", "--admin-port", "0"]
    if redis_url:
        argv += ["--redis-url", redis_url]
    return [*argv, *extra]


def gateway_process(
    *,
    kind: str = "gateway",
    redis_url: str | None = None,
    api_key: str | None = None,
    env: dict[str, str] | None = None,
    cpu: int | None = None,
    env_drop: tuple[str, ...] = (),
    extra_args: Sequence[str] = (),
) -> ServerProcess:
    """A `wsfleet gateway` child (not started): Redis broker when given `redis_url`.

    JSON logs are forced (the ready line is parsed); the level is left alone (the ready
    line is an info event, so a `WSFLEET_LOG_LEVEL` above info never becomes ready).
    """
    full_env = {"WSFLEET_LOG_JSON": "true", **(env or {})}
    if api_key:
        full_env["WSFLEET_API_KEY"] = api_key
    argv = gateway_argv(redis_url, extra_args)
    return ServerProcess(kind, argv, GATEWAY_READY, env=full_env, cpu=cpu, env_drop=env_drop)
