"""Server processes under test: started pinned to a CPU, measured, stopped.

Three kinds, started the same way so their figures compare:

- ``baseline``: the plain picows broadcast server (`reference_server`);
- ``gateway-off``: the gateway with its features off (embedded in-memory
  broker, no Redis, no API key);
- ``gateway``: the gateway with its features on (Redis broker, API key).

Each prints one JSON "ready" line on stdout; the rest of its output is drained
by a thread so a chatty server never blocks on a full pipe.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wsfleet.services import stop_process

BASELINE = "baseline"
GATEWAY_OFF = "gateway-off"
GATEWAY = "gateway"


def pin_to(cpu: int | None) -> Callable[[], None] | None:
    """A preexec_fn pinning the child to `cpu` (None: no pinning)."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return None
    target = {cpu}

    def pin() -> None:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, target)

    return pin


def usable_cpus() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def rss_bytes(pid: int) -> int:
    """Resident set size of process `pid` (Linux /proc)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass
class ServerProcess:
    """One server under test, as a child process."""

    kind: str
    argv: list[str]
    ready_event: str
    env: dict[str, str] = field(default_factory=dict)
    cpu: int | None = None
    proc: subprocess.Popen[str] | None = None
    ready: dict[str, Any] = field(default_factory=dict)
    output: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=200))
    env_drop: tuple[str, ...] = ()
    log_path: str | None = None
    """The child's stdout and stderr (a temporary file, removed by `stop`)."""
    """Prefixes of inherited env vars not passed on (e.g. ``COVERAGE_``: measure untraced)."""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def ws_url(self) -> str:
        if "ws" in self.ready:
            return str(self.ready["ws"])
        return f"ws://127.0.0.1:{self.ready['port']}/ws"

    @property
    def admin_url(self) -> str | None:
        admin = self.ready.get("admin")
        return str(admin) if admin else None

    def start(self, timeout_s: float = 60.0) -> ServerProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith(self.env_drop or ("\0",))}
        env.update(self.env)
        # Output to a file, not a pipe: a pipe needs a reader thread in the load
        # process, and a chatty server (audit lines) would then cost the load GIL time.
        fd, path = tempfile.mkstemp(prefix=f"wsfleet-bench-{self.kind}-", suffix=".log")
        self.log_path = path
        with os.fdopen(fd, "w") as sink:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                env=env,
                preexec_fn=pin_to(self.cpu),  # only sets CPU affinity
            )
        found = threading.Event()
        deadline = time.monotonic() + timeout_s
        with open(path, encoding="utf-8", errors="replace") as source:
            pending = ""
            while not found.is_set():
                chunk = source.read()
                pending += chunk
                *lines, pending = pending.split("\n")
                for line in lines:
                    self._seen(line, found)
                if found.is_set():
                    break
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    tail = "\n".join(self.output)
                    self.stop()
                    raise RuntimeError(f"{self.kind} server did not become ready:\n{tail}")
                if not chunk:
                    time.sleep(0.05)  # polling the child's output file for its ready line
        return self

    def _seen(self, line: str, found: threading.Event) -> None:
        self.output.append(line.rstrip())
        if found.is_set():
            return
        with contextlib.suppress(ValueError):
            doc = json.loads(line)
            if isinstance(doc, dict) and doc.get("event") == self.ready_event:
                self.ready = doc
                found.set()

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def stop(self) -> None:
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


def reference_server(cpu: int | None = None, reply_delay_ms: float = 0.0) -> ServerProcess:
    """The plain picows broadcast server (or, with a delay, the delay server)."""
    argv = [sys.executable, "-m", "wsfleet.bench.reference_server", "--port", "0"]
    if reply_delay_ms:
        argv += ["--reply-delay-ms", str(reply_delay_ms)]
    return ServerProcess(BASELINE, argv, "reference_server_ready", cpu=cpu)


def gateway_server(
    cpu: int | None = None,
    redis_url: str | None = None,
    api_key: str | None = None,
    env: dict[str, str] | None = None,
    kind: str = GATEWAY,
) -> ServerProcess:
    """A `wsfleet gateway` process on free ports (features on when given Redis)."""
    argv = [
        sys.executable,
        "-m",
        "wsfleet",
        "gateway",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--admin-port",
        "0",
    ]
    if redis_url:
        argv += ["--redis-url", redis_url]
    full_env = dict(env or {})  # keep info logs: the ready line is an info event
    if api_key:
        full_env["WSFLEET_API_KEY"] = api_key
    return ServerProcess(kind, argv, "gateway_ready", env=full_env, cpu=cpu)
