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
from typing import Any, Self

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


CLUSTER_BUS_OFFSET = 10000
"""A cluster node's bus listens on its port + this (Redis's fixed offset)."""
MAX_CLUSTER_PORT = 65535 - CLUSTER_BUS_OFFSET


def free_cluster_port(host: str = "127.0.0.1", taken: set[int] | None = None) -> int:
    """A free port below `MAX_CLUSTER_PORT` whose bus port (+10000) is free too."""
    taken = taken or set()
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        if port > MAX_CLUSTER_PORT or port in taken or port + CLUSTER_BUS_OFFSET in taken:
            continue
        with contextlib.suppress(OSError):
            for candidate in (port, port + CLUSTER_BUS_OFFSET):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                    probe.bind((host, candidate))
            return port
    raise RuntimeError("no free port pair (port, port + 10000) found for a cluster node")


@dataclass
class RedisCluster:
    """A throw-away Redis Cluster on loopback: `primaries` shards, each with `replicas`
    replicas (``redis-server --cluster-enabled yes`` per node, joined by
    ``redis-cli --cluster create``). No persistence; `node_timeout_ms` is the failure
    detection time (a dead primary's replica is promoted about that long after it died).

    `password` (and `username`, an ACL user with every right) protect every node; the
    seed `url` carries them, as the gateway's ``--redis-url`` would. `tls` (CA, certificate,
    key: PEM files for 127.0.0.1) makes every node speak only TLS, the cluster bus and
    replication included; `url` is then ``rediss://`` with the CA.
    """

    primaries: int = 3
    replicas: int = 1
    host: str = "127.0.0.1"
    node_timeout_ms: int = 2000
    password: str | None = None
    username: str | None = None
    workdir: Path | None = None
    extra_args: list[str] = field(default_factory=list)
    nodes: list[RedisServer] = field(default_factory=list)
    tls: tuple[Path, Path, Path] | None = None

    @property
    def url(self) -> str:
        """The seed URL: the first node (credentials included when set)."""
        return self.node_url(self.nodes[0].port)

    @property
    def live_url(self) -> str:
        """A seed URL of a node that runs now (the first node may have been killed)."""
        alive = next(n for n in self.nodes if n.proc is not None and n.proc.poll() is None)
        return self.node_url(alive.port)

    def node_url(self, port: int) -> str:
        auth = ""
        if self.password is not None:
            auth = f"{self.username or ''}:{self.password}@"
        if self.tls is not None:
            return f"rediss://{auth}{self.host}:{port}/0?ssl_ca_certs={self.tls[0]}"
        return f"redis://{auth}{self.host}:{port}/0"

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def start(self) -> Self:
        cli = find_binary("redis-cli", "redis-tools")
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="wsfleet-rcluster-"))
        count = self.primaries * (1 + self.replicas)
        taken: set[int] = set()
        try:
            for _ in range(count):
                port = free_cluster_port(self.host, taken)
                taken.update((port, port + CLUSTER_BUS_OFFSET))
                workdir = self.workdir / str(port)
                workdir.mkdir(parents=True, exist_ok=True)
                node = RedisServer(port=port, host=self.host, workdir=workdir)
                node.extra_args = [*self._node_args(port), *self.extra_args]
                self.nodes.append(node)
                node.start()
            addresses = [f"{self.host}:{n.port}" for n in self.nodes]
            create = [cli, *self._cli_auth(), "--cluster", "create", *addresses]
            create += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
            subprocess.run(create, check=True, capture_output=True, timeout=60)
            self.wait_ok(60.0)
        except BaseException:
            self.stop()
            raise
        return self

    def _node_args(self, port: int) -> list[str]:
        args = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(self.node_timeout_ms),
        ]
        if self.tls is not None:
            ca, cert, key = (str(p) for p in self.tls)
            args += ["--tls-port", str(port), "--port", "0"]
            args += ["--tls-cluster", "yes", "--tls-replication", "yes"]
            args += ["--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", ca]
            args += ["--tls-auth-clients", "no"]
        if self.password is not None:
            args += ["--masterauth", self.password, "--requirepass", self.password]
            if self.username is not None:
                args += ["--masteruser", self.username]
                args += ["--user", self.username, "on", f">{self.password}", "~*", "&*", "+@all"]
        return args

    def _cli_auth(self) -> list[str]:
        tls = ["--tls", "--cacert", str(self.tls[0])] if self.tls is not None else []
        if self.password is None:
            return tls
        auth = [*tls, "--no-auth-warning", "-a", self.password]
        if self.username is not None:
            auth += ["--user", self.username]
        return auth

    def cli(self, port: int, *args: str, timeout_s: float = 30.0) -> str:
        """``redis-cli -p port args...`` (authenticated); its output."""
        cli = find_binary("redis-cli", "redis-tools")
        argv = [cli, *self._cli_auth(), "-h", self.host, "-p", str(port), *args]
        done = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=timeout_s)
        return done.stdout

    def info(self, port: int) -> dict[str, str]:
        """``CLUSTER INFO`` of one node as a dict."""
        out = self.cli(port, "cluster", "info")
        return dict(line.split(":", 1) for line in out.split() if ":" in line)

    def shards(self) -> list[tuple[int, list[int]]]:
        """Live topology from a reachable node: (primary port, its replicas' ports) per
        primary that owns slots."""
        for node in self.nodes:
            if node.proc is None or node.proc.poll() is not None:
                continue
            with contextlib.suppress(subprocess.SubprocessError):
                return parse_cluster_nodes(self.cli(node.port, "cluster", "nodes"))
        raise RuntimeError("no cluster node answers")

    def wait_ok(self, timeout_s: float) -> None:
        """Block until every running node says ``cluster_state:ok`` and agrees on who
        serves every slot."""
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            try:
                running = [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]
                states = [self.info(n.port) for n in running]
                views = {
                    tuple(
                        (p, tuple(r))
                        for p, r in parse_cluster_nodes(self.cli(n.port, "cluster", "nodes"))
                    )
                    for n in running
                }
                ok = all(s.get("cluster_state") == "ok" for s in states)
                slots = all(s.get("cluster_slots_ok") == "16384" for s in states)
                view = next(iter(views)) if len(views) == 1 else ()
                replicated = len(running) - len(view) == sum(len(r) for _, r in view)
                if ok and slots and view and replicated and self._synced(view):
                    return
                last = f"states={[s.get('cluster_state') for s in states]} views={views}"
            except subprocess.SubprocessError as exc:
                last = repr(exc)
            time.sleep(0.1)
        raise TimeoutError(f"redis cluster not ok after {timeout_s}s: {last}")

    def _synced(self, view: tuple[tuple[int, tuple[int, ...]], ...]) -> bool:
        """Every replica of `view` has finished its first sync with its primary."""
        for _, replicas in view:
            for port in replicas:
                info = self.cli(port, "info", "replication")
                if "master_link_status:up" not in info:
                    return False
        return True

    def flushall(self) -> None:
        """Empty every primary (tests sharing one cluster start each from nothing)."""
        for primary, _ in self.shards():
            self.cli(primary, "flushall")

    def owner(self, slot: int) -> int:
        """The port of the primary serving `slot` now."""
        alive = next(n for n in self.nodes if n.proc is not None and n.proc.poll() is None)
        for row in json_slots(self.cli(alive.port, "--json", "cluster", "slots")):
            if row[0] <= slot <= row[1]:
                return int(row[2][1])
        raise LookupError(f"no primary serves slot {slot}")

    def node(self, port: int) -> RedisServer:
        return next(n for n in self.nodes if n.port == port)

    def kill(self, port: int) -> None:
        """SIGKILL one node (no goodbye: its peers must detect it)."""
        proc = self.node(port).proc
        assert proc is not None
        proc.kill()
        proc.wait(timeout=10)

    def restart(self, port: int) -> None:
        """Start a stopped node again on its port and folder (it rejoins from nodes.conf)."""
        node = self.node(port)
        node.proc = None
        node.start()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def parse_cluster_nodes(text: str) -> list[tuple[int, list[int]]]:
    """``CLUSTER NODES`` → (primary port, replica ports) for each live primary with slots,
    sorted by port."""
    primaries: dict[str, int] = {}
    replicas: dict[str, list[int]] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        node_id, address, flags, master = fields[0], fields[1], fields[2].split(","), fields[3]
        port = int(address.split("@")[0].rsplit(":", 1)[1])
        if "fail" in flags or "noaddr" in flags:
            continue
        if "master" in flags and len(fields) > 8:
            primaries[node_id] = port
        elif "slave" in flags:
            replicas.setdefault(master, []).append(port)
    return sorted((port, sorted(replicas.get(node_id, []))) for node_id, port in primaries.items())


def json_slots(text: str) -> list[list[Any]]:
    """``redis-cli --json cluster slots`` parsed."""
    import json

    rows: list[list[Any]] = json.loads(text)
    return rows
