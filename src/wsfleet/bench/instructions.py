"""Instructions per operation, counted by callgrind: features on vs off, without the noise.

On a shared machine the suite's latencies and rates move by ±20 % between runs,
more than the 15 % that features on may cost (issue 4). Valgrind's callgrind
counts the instructions a process executes, which repeats to well under 1 %
whatever else runs. Here each gateway kind runs under callgrind four times, one
client driving it strictly sequentially (one request in flight, so no run
batches differently from another):

- a base run: `Sizes.switches` warm switches (round 15 channels the gateway
  already holds), `Sizes.first_visits` switches to channels new to it, and
  `Sizes.messages` publishes fanned out to `Sizes.subscribers` subscribers;
- three runs each tripling one of those counts.

A tripled run minus the base run, divided by the extra operations, is the
instructions one operation costs, everything fixed (start-up, connections,
warm-up) cancelled out. The gateway process only: Redis's own work is not in
it. Instructions are not time (a cache miss costs more than an add), but the
features' extra work is extra instructions.

What would not cancel out, and is kept out:

- Teardown. The counts are those written (``callgrind_control --dump``) after
  the operations and before any connection closes. How much closing a thousand
  connections costs depends on how many closes one event-loop pass handles
  (libuv scans the pass's pending events for each closed socket), which is
  timing, not work.
- Redis state. Redis is emptied before each run: otherwise a later run's
  subscribers are each sent the history the earlier runs published, which the
  base run's were not.
- Periodic work and cyclic garbage collection (`QUIET`).

The fan-out has 1,000 subscribers, as in the gateway issue's fan-out figure.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import redis

from wsfleet.bench.figures import bench_options
from wsfleet.bench.results import ON_OFF_BOUND, on_off_verdict
from wsfleet.bench.servers import GATEWAY, GATEWAY_OFF
from wsfleet.gatewayproc import ServerProcess, gateway_process
from wsfleet.loadtest.connection import LoadConnection
from wsfleet.loadtest.engine import Engine
from wsfleet.services import stop_process

KINDS = (GATEWAY_OFF, GATEWAY)
WORKLOADS = ("switch", "first_visit", "delivery")
DUMP_POLL_S = 0.2
DUMP_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 180.0
"""A gateway under callgrind starts and shuts down slowly (writing its exit counts, unused)."""
QUIET = {
    "WSFLEET_GC_GEN0_THRESHOLD": "1000000000",
    "WSFLEET_GC_CHECK_INTERVAL_S": "3600",
    "WSFLEET_HEARTBEAT_S": "3600",
    "WSFLEET_IDLE_TIMEOUT_S": "7200",
    "WSFLEET_HOT_FLUSH_S": "3600",
    "WSFLEET_CACHE_CLEANUP_S": "3600",
}
"""Settings of a counted gateway. Under callgrind a run lasts about 50 times longer, so
work done per second (heartbeat sweeps, flushes) would be charged to the operations
many times over; and a cyclic collection (millions of instructions) falls at a
different point in each run, which the subtraction cannot cancel. So: periodic work
hourly, and no automatic cyclic collection (reference counting still frees all but
cycles). What is counted is the work of the operations themselves."""


@dataclass(frozen=True)
class Sizes:
    """Operations of one run (see the module docstring)."""

    switches: int = 1000
    first_visits: int = 200
    messages: int = 30
    subscribers: int = 1000

    def tripled(self, workload: str) -> Sizes:
        field = {"switch": "switches", "first_visit": "first_visits", "delivery": "messages"}
        return dataclasses.replace(self, **{field[workload]: 3 * getattr(self, field[workload])})

    def operations(self, workload: str) -> int:
        """How many operations of `workload` the run makes (deliveries for fan-out)."""
        if workload == "switch":
            return self.switches
        if workload == "first_visit":
            return self.first_visits
        return self.messages * self.subscribers


def unavailable() -> str | None:
    """Why callgrind cannot run here (None: it can)."""
    return None if shutil.which("valgrind") else "valgrind is not installed (apt: valgrind)"


_TOTALS = re.compile(r"^(?:totals|summary):\s+(\d+)", re.MULTILINE)


def callgrind_total(path: Path) -> int:
    """The instruction count of a callgrind output file."""
    found = _TOTALS.search(path.read_text(errors="replace"))
    if found is None:
        raise ValueError(f"no totals in callgrind output {path}")
    return int(found.group(1))


def per_operation(base: int, tripled: int, extra_operations: int) -> float:
    """Instructions per operation from a base run and a run with `extra_operations` more."""
    if extra_operations <= 0:
        raise ValueError("the tripled run must make more operations")
    return (tripled - base) / extra_operations


def gateway_under_callgrind(
    kind: str, redis_url: str | None, out: Path, env: dict[str, str]
) -> ServerProcess:
    server = gateway_process(
        kind=kind,
        redis_url=redis_url if kind == GATEWAY else None,
        env={**env, **QUIET, "PYTHONHASHSEED": "0"},  # and the same dict layouts in every run
        env_drop=("COVERAGE_",),  # measured untraced
    )
    server.argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *server.argv]
    return server


Checkpoint = Callable[[Engine, LoadConnection], Awaitable[None]]


async def drive(
    url: str, sizes: Sizes, jwt_secret: str | None, before_close: Checkpoint | None = None
) -> None:
    """The run's operations, one request in flight at a time (see the module docstring);
    then `before_close` (given the engine and one connection), then every connection
    closed."""
    engine = Engine(url, bench_options(jwt_secret=jwt_secret))
    try:
        subscribers = await engine.open_many(sizes.subscribers)
        mover, publisher = await engine.open_many(2)
        for conn in subscribers:
            await engine.call(conn, "subscribe", channel="fan")
        current = "sw-0"
        await engine.call(mover, "subscribe", channel=current)

        async def switch(to: str) -> None:
            nonlocal current
            await engine.call(mover, "switch", **{"from": current, "to": to})
            current = to

        async def publish(seq: int) -> None:
            expected = engine.stats.delivered + sizes.subscribers
            await engine.call(publisher, "publish", channel="fan", data={"s": seq})
            deadline = time.monotonic() + 60.0
            while engine.stats.delivered < expected and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.002)

        for k in range(1, 31):  # warm-up, the same in every run: all 15 channels held
            await switch(f"sw-{k % 15}")
        for seq in range(3):
            await publish(seq)
        for k in range(sizes.switches):
            await switch(f"sw-{(k + 1) % 15}")
        for k in range(sizes.first_visits):
            await switch(f"new-{k}")
        for seq in range(sizes.messages):
            await publish(seq)
        owed = (sizes.messages + 3) * sizes.subscribers
        if engine.stats.delivered < owed:
            raise RuntimeError(f"fan-out delivered {engine.stats.delivered} of {owed}")
        if engine.stats.errors:  # a failed request would count as a cheap one
            raise RuntimeError(f"requests failed: {dict(engine.stats.errors)}")
        if before_close is not None:
            await before_close(engine, mover)
    finally:
        await engine.close_all()


def empty_redis(url: str) -> None:
    """Every run starts from an empty Redis.

    Otherwise what earlier runs left (the fan-out channel's history, above all)
    makes a later run's subscribes dearer than the base run's: every subscriber
    is sent the history the earlier runs published, charged to whichever
    workload was tripled.
    """
    client = redis.Redis.from_url(url)
    try:
        client.flushall()
    finally:
        client.close()


def request_dump(pid: int) -> subprocess.Popen[str]:
    """Ask callgrind in process `pid` to write its counts so far (to ``<out>.1``).

    Callgrind takes the request only while the process runs code, so the caller
    makes it run (`checkpoint`) until this returns.
    """
    return subprocess.Popen(
        ["callgrind_control", "--dump", str(pid)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def checkpoint(pid: int, engine: Engine, conn: LoadConnection) -> None:
    """Counts written now, before the connections close: see the module docstring."""
    control = request_dump(pid)
    deadline = time.monotonic() + DUMP_TIMEOUT_S
    while control.poll() is None:
        if time.monotonic() > deadline:
            control.kill()
            raise RuntimeError(f"callgrind did not dump within {DUMP_TIMEOUT_S}s")
        # wakes the gateway, so callgrind sees the request (how many pings that
        # takes may differ by one or two between runs)
        await engine.call(conn, "ping")
        await asyncio.sleep(DUMP_POLL_S)
    output = control.communicate()[0]
    if control.returncode != 0 or "OK" not in output:
        raise RuntimeError(f"callgrind_control --dump failed: {output.strip()}")


async def count_run(
    kind: str,
    sizes: Sizes,
    redis_url: str | None,
    env: dict[str, str],
    jwt_secret: str | None,
    work_dir: Path,
) -> int:
    """One gateway under callgrind driven through `sizes`: its instruction count."""
    out = Path(tempfile.mkstemp(prefix=f"callgrind-{kind}-", dir=work_dir)[1])
    if redis_url is not None:
        await asyncio.to_thread(empty_redis, redis_url)
    server = gateway_under_callgrind(kind, redis_url, out, env)
    await asyncio.to_thread(server.start, STOP_TIMEOUT_S)
    try:
        await drive(server.ws_url, sizes, jwt_secret, partial(checkpoint, server.pid))
    finally:
        if server.proc is not None:
            await asyncio.to_thread(stop_process, server.proc, STOP_TIMEOUT_S)  # type: ignore[arg-type]
        await asyncio.to_thread(server.stop)
    return callgrind_total(Path(f"{out}.1"))


async def measure(
    redis_url: str,
    env_for: Callable[[str], dict[str, str]],
    secret_for: Callable[[str], str | None],
    sizes: Sizes | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Instructions per operation of each workload for both kinds, and on ÷ off."""
    sizes = sizes or Sizes()
    per_op: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="wsfleet-callgrind-") as tmp:
        for kind in KINDS:
            log(f"  {kind}: base run under callgrind")
            base = await count_run(
                kind, sizes, redis_url, env_for(kind), secret_for(kind), Path(tmp)
            )
            per_op[kind] = {}
            for workload in WORKLOADS:
                log(f"  {kind}: {workload} x3 under callgrind")
                more = sizes.tripled(workload)
                total = await count_run(
                    kind, more, redis_url, env_for(kind), secret_for(kind), Path(tmp)
                )
                extra = more.operations(workload) - sizes.operations(workload)
                per_op[kind][workload] = per_operation(base, total, extra)
    ratios = {w: per_op[GATEWAY][w] / per_op[GATEWAY_OFF][w] for w in WORKLOADS}
    return {"sizes": dataclasses.asdict(sizes), "per_operation": per_op, "on_off": ratios}


def to_markdown(doc: dict[str, Any]) -> str:
    bound = ON_OFF_BOUND
    labels = {
        "switch": "warm switch (channel the gateway holds)",
        "first_visit": "first-visit switch (channel new to the gateway)",
        "delivery": "fan-out delivery",
    }
    lines = [
        "## Instructions per operation (callgrind; gateway process only)",
        "",
        "One client, one request in flight; each figure is a run with three times the "
        "operations minus a base run, over the extra operations (see "
        "`wsfleet.bench.instructions`).",
        "",
        f"| operation | features off | features on | on ÷ off | within {bound:.0%} |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for workload in WORKLOADS:
        off = doc["per_operation"][GATEWAY_OFF][workload]
        on = doc["per_operation"][GATEWAY][workload]
        ratio = doc["on_off"][workload]
        verdict = "yes" if on_off_verdict(ratio, "lower") else "no"
        lines.append(f"| {labels[workload]} | {off:,.0f} | {on:,.0f} | {ratio:.3f} | {verdict} |")
    return "\n".join(lines) + "\n"
