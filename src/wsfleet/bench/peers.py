"""The benchmark's Node peers: socket.io 4.8 (alone and on @socket.io/redis-adapter) and
Node `ws` 8, measured by the same client in the same run as the gateway.

They are not Python dependencies: `install` runs ``npm ci`` once for the pinned
``node/package.json`` and ``package-lock.json`` into a cache outside the checkout
(``~/.cache/wsfleet/bench-node/<hash of the two files>``, or
``$WSFLEET_BENCH_NODE_CACHE``), and the peers run from there with ``node``. Each speaks
wire protocol v1 the way a user of that library would write it (``node/*.js``), prints
one ``peer_ready`` JSON line and is started, pinned and stopped like the gateway.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from wsfleet.gatewayproc import ServerProcess

SOCKETIO = "socketio"
SOCKETIO_REDIS = "socketio-redis"
NODE_WS = "node-ws"
PEER_KINDS = (SOCKETIO_REDIS, SOCKETIO, NODE_WS)
NODE_DIR = Path(__file__).with_name("node")
SCRIPTS = {
    SOCKETIO: "socketio_server.js",
    SOCKETIO_REDIS: "socketio_server.js",
    NODE_WS: "ws_server.js",
}
READY = "peer_ready"
NPM_TIMEOUT_S = 600.0


def unavailable() -> str | None:
    """Why the peers cannot run here (no node or npm), or None."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            return f"`{tool}` not found on PATH (install Node.js 18+ and npm)"
    return None


def cache_dir() -> Path:
    """Where the pinned packages are installed: keyed by the manifest and lock file."""
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        digest.update((NODE_DIR / name).read_bytes())
    root = os.environ.get("WSFLEET_BENCH_NODE_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "wsfleet" / "bench-node"
    return base / digest.hexdigest()[:16]


def install(log: Callable[[str], None] | None = None) -> Path:
    """``npm ci`` into the cache once; the scripts are copied there every time (cheap)."""
    target = cache_dir()
    target.mkdir(parents=True, exist_ok=True)
    done = target / ".installed"
    if not done.exists():
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(NODE_DIR / name, target / name)
        if log is not None:
            log(f"  installing the Node peers (npm ci) into {target}")
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=target,
            check=True,
            timeout=NPM_TIMEOUT_S,
            stdout=subprocess.DEVNULL,
        )
        done.write_text("ok\n")
    for script in NODE_DIR.glob("*.js"):
        shutil.copyfile(script, target / script.name)
    return target


def peer_server(
    kind: str, root: Path, cpu: int | None = None, redis_url: str | None = None
) -> ServerProcess:
    """A peer as a child process (not started); `redis_url` only for ``socketio-redis``."""
    argv = ["node", str(root / SCRIPTS[kind]), "--port", "0"]
    if kind == SOCKETIO_REDIS:
        if redis_url is None:
            raise ValueError("socketio-redis needs a Redis URL")
        argv += ["--redis", redis_url]
    return ServerProcess(kind, argv, READY, cpu=cpu)
