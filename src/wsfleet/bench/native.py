"""The bench's native receiver: the fan-out's subscribers in Go, the publisher in Python.

Every server of the fan-out figure topped out at the same 75-84k deliveries/s: the
one-core Python client counting them was the ceiling, not the servers. `NativeReceiver`
runs ``native/recv`` (a Go program with no third-party modules: RFC 6455 client, wire
protocol v1 and socket.io as `wsfleet.loadtest.connection` speaks them), which opens and
subscribes the connections, counts deliveries with one atomic add each and answers
JSON-line commands on its stdin::

    async with NativeReceiver({"gateway": url}, subscribers=1000, cpu=1) as recv:
        ...publish K messages from a Python `Engine` connection...
        got = await recv.wait_for("gateway", 1000 * K, timeout_s=30.0)

`build` compiles it once into a cache outside the checkout
(``~/.cache/wsfleet/bench-native/<hash of the Go sources>/benchrecv``, or
``$WSFLEET_BENCH_NATIVE_CACHE``); `unavailable` says why it cannot (no ``go``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from wsfleet.gatewayproc import pin_to

SOURCE_DIR = Path(__file__).with_name("native") / "recv"
GO_FALLBACK = Path("/usr/local/go/bin/go")
BUILD_TIMEOUT_S = 300.0
STDERR_TAIL_BYTES = 4096
"""How much of the receiver's stderr an error quotes (its last bytes)."""
REPLY_MARGIN_S = 10.0
"""How long past a command's own timeout its reply may take before the receiver is
taken for stuck."""


class NativeReceiverError(RuntimeError):
    """The native receiver failed to build, start, open its connections or answer."""


def go_binary() -> str | None:
    """The ``go`` command: on PATH, else /usr/local/go/bin/go; None when neither."""
    found = shutil.which("go")
    if found is not None:
        return found
    return str(GO_FALLBACK) if os.access(GO_FALLBACK, os.X_OK) else None


def unavailable() -> str | None:
    """Why the native receiver cannot be built here (no Go toolchain), or None."""
    if go_binary() is None:
        return f"`go` not found on PATH nor at {GO_FALLBACK} (install Go 1.22+)"
    return None


def sources() -> list[Path]:
    """The files the binary is built from (tests excluded: they do not change it)."""
    files = [p for p in SOURCE_DIR.glob("*.go") if not p.name.endswith("_test.go")]
    files += [p for p in (SOURCE_DIR / "go.mod", SOURCE_DIR / "go.sum") if p.exists()]
    return sorted(files)


def cache_dir() -> Path:
    """Where the binary is built: keyed by the Go sources' names and contents."""
    digest = hashlib.sha256()
    for path in sources():
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    root = os.environ.get("WSFLEET_BENCH_NATIVE_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "wsfleet" / "bench-native"
    return base / digest.hexdigest()[:16]


def build() -> Path:
    """``go build`` once into the cache (to a temporary name, then renamed: two builds
    racing both end with a whole binary); the binary's path."""
    target = cache_dir() / "benchrecv"
    if target.exists():
        return target
    go = go_binary()
    if go is None:
        raise NativeReceiverError(unavailable() or "no go")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".benchrecv-", dir=target.parent)
    os.close(fd)
    # no cgo (a static binary, no C compiler needed); never fetch another toolchain
    env = {**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local"}
    try:
        done = subprocess.run(
            [go, "build", "-trimpath", "-o", tmp, "."],
            cwd=SOURCE_DIR,
            env=env,
            timeout=BUILD_TIMEOUT_S,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise NativeReceiverError(f"go build failed in {SOURCE_DIR}:\n{done.stderr[-2000:]}")
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return target


class NativeReceiver:
    """The Go receiver as a child process: `subscribers` subscribed connections to each
    contender (name → ws URL), counting its deliveries.

    `tokens`: per contender, bearer tokens for the upgrade (connection i uses token
    i mod len). `cpu`: pin it to that CPU (``taskset``). `procs`: its GOMAXPROCS.
    `ready_timeout_s` bounds building, connecting and subscribing them all. Starting fails
    when a contender has fewer than `subscribers` subscribed (unless not `require_all`:
    then `opened` says how many, `errors` why; none at all always fails).
    """

    def __init__(
        self,
        contenders: Mapping[str, str],
        subscribers: int,
        *,
        tokens: Mapping[str, Sequence[str]] | None = None,
        channel: str = "fanout",
        cpu: int | None = None,
        procs: int = 1,
        concurrency: int = 64,
        ready_timeout_s: float = 120.0,
        binary: Path | None = None,
        require_all: bool = True,
    ) -> None:
        if not contenders:
            raise ValueError("no contender")
        for name, url in contenders.items():
            if not name or "=" in name or "@" in url:
                raise ValueError(f"contender {name!r}={url!r}: a name without '=', no '@' in URL")
        self.contenders = dict(contenders)
        self.subscribers = subscribers
        self.tokens = {k: list(v) for k, v in (tokens or {}).items()}
        self.channel = channel
        self.cpu = cpu
        self.procs = procs
        self.concurrency = concurrency
        self.ready_timeout_s = ready_timeout_s
        self.binary = binary
        self.require_all = require_all
        self.opened: dict[str, int] = {}
        """Connections subscribed per contender when it became ready."""
        self.errors: dict[str, dict[str, int]] = {}
        """Per contender, error kinds and counts, as of the last reply that carried them."""
        self.proc: asyncio.subprocess.Process | None = None
        self._workdir: str | None = None
        self._stderr_path: str | None = None
        self._lock = asyncio.Lock()

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def argv(self, binary: Path, workdir: Path) -> list[str]:
        """The command line (token files are written into `workdir`)."""
        argv = [str(binary)]
        for name, url in self.contenders.items():
            spec = f"{name}={url}"
            tokens = self.tokens.get(name)
            if tokens:
                path = workdir / f"tokens-{len(argv)}.txt"
                path.write_text("".join(f"{t}\n" for t in tokens))
                spec += f"@{path}"
            argv += ["--contender", spec]
        argv += ["--subscribers", str(self.subscribers), "--channel", self.channel]
        argv += ["--concurrency", str(self.concurrency), "--procs", str(self.procs)]
        if self.cpu is not None and shutil.which("taskset") is not None:
            argv = ["taskset", "-c", str(self.cpu), *argv]
        return argv

    async def start(self) -> NativeReceiver:
        """Build if needed, start, and wait (bounded) until every contender is subscribed."""
        try:
            async with asyncio.timeout(self.ready_timeout_s):
                binary = self.binary if self.binary is not None else await asyncio.to_thread(build)
                self._workdir = tempfile.mkdtemp(prefix="wsfleet-native-")
                fd, self._stderr_path = tempfile.mkstemp(prefix="benchrecv-", suffix=".log")
                with os.fdopen(fd, "wb") as sink:
                    self.proc = await asyncio.create_subprocess_exec(
                        *self.argv(binary, Path(self._workdir)),
                        stdin=asyncio.subprocess.PIPE,
                        stdout=asyncio.subprocess.PIPE,
                        stderr=sink,
                        preexec_fn=None if shutil.which("taskset") else pin_to(self.cpu),
                    )
                ready = await self._read_reply()
        except BaseException as exc:
            tail = self.stderr_tail()
            await self.close()
            if isinstance(exc, TimeoutError):
                raise NativeReceiverError(
                    f"native receiver not ready after {self.ready_timeout_s} s\n{tail}".rstrip()
                ) from exc
            raise
        self.opened = {str(k): int(v) for k, v in ready.get("opened", {}).items()}
        self._keep_errors(ready)
        short = {k: n for k, n in self.opened.items() if n < self.subscribers}
        if ready.get("ready") is not True or (short and self.require_all):
            await self.close()
            raise NativeReceiverError(
                f"native receiver: opened {self.opened} of {self.subscribers} each: {self.errors}"
            )
        return self

    async def count(self) -> dict[str, int]:
        """Deliveries counted so far per contender (errors: `errors`)."""
        reply = await self._request({"cmd": "count"}, REPLY_MARGIN_S)
        self._keep_errors(reply)
        return {str(k): int(v) for k, v in reply["counts"].items()}

    async def wait_for(self, name: str, target: int, timeout_s: float) -> int:
        """Once `name` counted `target` deliveries (or after `timeout_s`): its count."""
        cmd = {"cmd": "await", "name": name, "target": target, "timeout_s": timeout_s}
        reply = await self._request(cmd, timeout_s + REPLY_MARGIN_S)
        return int(reply["count"])

    async def close(self, timeout_s: float = 10.0) -> None:
        """Quit (every connection closed), killed if it has not exited within `timeout_s`."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.returncode is None:
            if proc.stdin is not None and not proc.stdin.is_closing():
                with contextlib.suppress(OSError):
                    proc.stdin.write(b'{"cmd":"quit"}\n')
                    proc.stdin.close()
            try:
                async with asyncio.timeout(timeout_s):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        if self._stderr_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._stderr_path)
            self._stderr_path = None

    async def __aenter__(self) -> NativeReceiver:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # the pipe ---------------------------------------------------------------

    def stderr_tail(self) -> str:
        """The last `STDERR_TAIL_BYTES` the receiver wrote on stderr."""
        if self._stderr_path is None:
            return ""
        with open(self._stderr_path, "rb") as source:
            source.seek(max(0, os.fstat(source.fileno()).st_size - STDERR_TAIL_BYTES))
            return source.read().decode(errors="replace")

    def _keep_errors(self, reply: Mapping[str, Any]) -> None:
        errors = reply.get("errors") or {}
        self.errors = {str(k): {str(e): int(n) for e, n in v.items()} for k, v in errors.items()}

    async def _request(self, cmd: Mapping[str, object], timeout_s: float) -> dict[str, Any]:
        async with self._lock:
            proc = self.proc
            if proc is None or proc.stdin is None:
                raise NativeReceiverError("native receiver not running")
            try:
                proc.stdin.write(json.dumps(cmd).encode() + b"\n")
                async with asyncio.timeout(timeout_s):
                    await proc.stdin.drain()
                    return await self._read_reply()
            except (OSError, TimeoutError) as exc:
                raise NativeReceiverError(
                    f"native receiver did not answer {cmd}: {exc!r}\n{self.stderr_tail()}"
                ) from exc

    async def _read_reply(self) -> dict[str, Any]:
        """The next reply line; a ``{"error": ...}`` line or an exit raises."""
        assert self.proc is not None
        assert self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        if not line:
            code = await self.proc.wait()
            raise NativeReceiverError(
                f"native receiver exited ({code}) without a reply:\n{self.stderr_tail()}"
            )
        reply = json.loads(line)
        if not isinstance(reply, dict):
            raise NativeReceiverError(f"native receiver: not a JSON object: {line!r}")
        if "error" in reply:
            tail = self.stderr_tail()
            raise NativeReceiverError(f"native receiver: {reply['error']}\n{tail}".rstrip())
        return reply
