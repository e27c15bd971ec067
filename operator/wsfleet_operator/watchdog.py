"""Never deaf: stop the operator when one of kopf's essential tasks dies.

kopf runs every watch stream (and its observers, peering, event poster and health
reporter) as a "guarded" task: `kopf._cogs.aiokits.aiotasks.guard` logs the task's
failure ("Watcher for … has failed: …") or its unexpected end, then lets it go. A watch
stream fails on any ERROR event but 410 (a 429 "storage is (re)initializing" while the
API server's watch cache starts, a 500). Whether kopf then stops is up to its version:
kopf #787 reports streams that died for good while the process and its `/healthz` lived
on, the operator deaf to that resource until restarted.

This module does not rely on kopf to stop. A logging handler on kopf's logger recognises
the guard's report by where it comes from (the function `guard` of kopf's `aiotasks`
module, at warning or above), not by its wording, and trips; `supervise` then stops kopf
(its `/healthz` goes away with it) and raises `KopfTaskFailed`, and the CLI exits
non-zero so that Kubernetes restarts the pod. The reconcile is level-based: a restart
loses nothing. tests/operator/test_watchdog.py pins the recognition against the
installed kopf. (The guard logs a failure at error, an unexpected end at warning: a log
level above that, `--log-level critical`, would hide them from this handler too.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import structlog

log = structlog.get_logger("wsfleet.operator.watchdog")

KOPF_LOGGER = "kopf"
"""Every kopf logger is below this one (guarded tasks log to their module's logger)."""

_GUARD_MODULE = "aiotasks"
_GUARD_FUNCTION = "guard"

Flag = asyncio.Event | threading.Event
"""A stop flag the caller raises (what `kopf.operator(stop_flag=…)` takes, minus futures)."""


@dataclass(frozen=True)
class KopfTaskFailure:
    """One of kopf's essential tasks died: which one, and why."""

    task: str
    """The task's name, e.g. `watcher for websocketfleets.v1alpha1.wsfleet.io@None`."""
    error: str
    """`Type: message` of its exception, or kopf's message when it ended without one."""


class KopfTaskFailed(RuntimeError):
    """The operator stopped because a kopf task died; the process must exit non-zero."""

    def __init__(self, failure: KopfTaskFailure) -> None:
        super().__init__(f"{failure.task}: {failure.error}")
        self.failure = failure


def task_failure(
    record: logging.LogRecord, task: asyncio.Task[object] | None = None
) -> KopfTaskFailure | None:
    """The failure a kopf log record reports, or None if it reports none.

    A failure is what `aiotasks.guard` logs at warning or above: an exception (logged
    with it) or an unexpected end. Cancellations are logged at debug and are no failure.
    `task` is the task that logged it (the guard runs in the guarded task itself).
    """
    if record.name != KOPF_LOGGER and not record.name.startswith(f"{KOPF_LOGGER}."):
        return None
    if record.module != _GUARD_MODULE or record.funcName != _GUARD_FUNCTION:
        return None
    if record.levelno < logging.WARNING:
        return None
    message = record.getMessage()
    exc = record.exc_info[1] if record.exc_info else None
    error = f"{type(exc).__name__}: {exc}" if exc is not None else message
    name = task.get_name() if task is not None else message.split(" has ", 1)[0].lower()
    return KopfTaskFailure(task=name, error=error)


class Watchdog(logging.Handler):
    """Remembers the first kopf task failure and wakes `tripped()` (thread-safe)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(level=logging.WARNING)
        self.failure: KopfTaskFailure | None = None
        self._loop = loop
        self._tripped = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.failure is not None:
            return
        failure = task_failure(record, _current_task(self._loop))
        if failure is None:
            return
        self.failure = failure
        if _in_loop(self._loop):
            self._tripped.set()
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._tripped.set)

    async def tripped(self) -> KopfTaskFailure:
        """Wait for the first failure."""
        await self._tripped.wait()
        assert self.failure is not None
        return self.failure

    @contextlib.contextmanager
    def attached(self, logger: logging.Logger) -> Iterator[Watchdog]:
        logger.addHandler(self)
        try:
            yield self
        finally:
            logger.removeHandler(self)


def _in_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _current_task(loop: asyncio.AbstractEventLoop) -> asyncio.Task[object] | None:
    return asyncio.current_task(loop) if _in_loop(loop) else None


async def wait_flag(flag: Flag) -> None:
    """Until `flag` is raised; a thread-safe flag is checked in a thread, twice a second
    (so that a cancelled wait leaves no thread blocked for long)."""
    if isinstance(flag, asyncio.Event):
        await flag.wait()
        return
    while not await asyncio.to_thread(flag.wait, 0.5):
        pass


async def supervise(
    run: Callable[[asyncio.Event], Awaitable[None]],
    stop_flag: Flag | None = None,
    logger: logging.Logger | None = None,
) -> None:
    """`run(stop)` (kopf with `stop_flag=stop`) until it ends, `stop_flag` is raised, or a
    kopf task dies: then `stop` is raised and, once kopf is down, `KopfTaskFailed`."""
    loop = asyncio.get_running_loop()
    dog = Watchdog(loop)
    stop = asyncio.Event()

    reported: list[KopfTaskFailure] = []

    def report(failure: KopfTaskFailure) -> KopfTaskFailed:
        if not reported:
            reported.append(failure)
            log.error("operator.kopf_task_failed", task=failure.task, error=failure.error)
        return KopfTaskFailed(failure)

    async def on_failure() -> None:
        report(await dog.tripped())
        stop.set()

    async def on_stop_flag(flag: Flag) -> None:
        await wait_flag(flag)
        stop.set()

    with dog.attached(logger or logging.getLogger(KOPF_LOGGER)):
        waiters = [asyncio.create_task(on_failure(), name="kopf watchdog")]
        if stop_flag is not None:
            waiters.append(asyncio.create_task(on_stop_flag(stop_flag), name="stop-flag relay"))
        try:
            await run(stop)
        except Exception as exc:
            if dog.failure is None:
                raise
            raise report(dog.failure) from exc
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
    if dog.failure is not None:
        raise report(dog.failure)
