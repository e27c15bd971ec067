"""Local Redis and Prometheus servers, started as child processes.

Used by the local fleet (`wsfleet up`) and by the tests: both need real
servers on free loopback ports, started and stopped cleanly.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import yaml


class MissingBinaryError(RuntimeError):
    """A server binary the caller needs is not installed."""


def find_binary(name: str, apt_package: str) -> str:
    """Return the path of `name` or raise with an actionable message."""
    path = shutil.which(name)
    if path is None:
        raise MissingBinaryError(
            f"{name} not found on PATH: install it with "
            f"`apt-get install -y --no-install-recommends {apt_package}` "
            "or run `bash hack/install-deps.sh`"
        )
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(host: str, port: int, timeout_s: float, proc: subprocess.Popen[bytes]) -> None:
    """Block until `host:port` accepts TCP connections or the process dies."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"{host}:{port} not accepting connections after {timeout_s}s")


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `timeout_s`."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout_s)


@dataclass
class RedisServer:
    """A throw-away `redis-server` on a free loopback port (no persistence)."""

    port: int = 0
    host: str = "127.0.0.1"
    proc: subprocess.Popen[bytes] | None = None
    workdir: Path | None = None
    extra_args: list[str] = field(default_factory=list)
    """More ``--name value`` options, after (so overriding) the ones above."""

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> Self:
        binary = find_binary("redis-server", "redis-server")
        if not self.port:
            self.port = free_port(self.host)
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="wsfleet-redis-"))
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                self.host,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.host, self.port, 10.0, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def restart(self) -> None:
        """Stop and start again on the same port (data is lost: no persistence)."""
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class PrometheusServer:
    """A `prometheus` server scraping targets listed in a file_sd JSON file.

    `targets` may be rewritten while it runs (`set_targets`); Prometheus
    re-reads the file by itself.
    """

    port: int = 0
    host: str = "127.0.0.1"
    scrape_interval_s: float = 1.0
    workdir: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    extra_scrape_configs: list[dict[str, object]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def targets_file(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "targets.json"

    def set_targets(self, targets: list[str], labels: dict[str, str] | None = None) -> None:
        """Atomically rewrite the file_sd target list."""
        import json

        assert self.workdir is not None
        tmp = self.targets_file.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": targets, "labels": labels or {}}]))
        tmp.replace(self.targets_file)

    def start(self, targets: list[str] | None = None) -> Self:
        binary = find_binary("prometheus", "prometheus")
        if not self.port:
            self.port = free_port(self.host)
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="wsfleet-prom-"))
        if not self.targets_file.exists():
            self.set_targets(targets or [])
        interval = f"{int(self.scrape_interval_s * 1000)}ms"
        config = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "scrape_configs": [
                {
                    "job_name": "wsfleet-gateway",
                    "scrape_interval": interval,
                    "file_sd_configs": [
                        {"files": [str(self.targets_file)], "refresh_interval": "1s"}
                    ],
                },
                *self.extra_scrape_configs,
            ],
        }
        config_file = self.workdir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config))
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address={self.host}:{self.port}",
                "--storage.tsdb.retention.time=1d",
                "--web.enable-admin-api",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.host, self.port, 30.0, self.proc)
        self._wait_ready(30.0)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(urllib.error.URLError, OSError),
                urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp,
            ):
                if resp.status == 200:
                    return
            time.sleep(0.05)
        raise TimeoutError("prometheus not ready")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
