"""The watchdog's recognition of kopf's guarded-task failures, pinned against the installed
kopf (an upgrade that moves or renames `aiotasks.guard` fails here, loudly), and its
supervision of a kopf run."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Coroutine
from typing import Any

import pytest
from kopf._cogs.aiokits import aiotasks
from structlog.testing import capture_logs
from wsfleet_operator import cli, watchdog
from wsfleet_operator.watchdog import KopfTaskFailed, KopfTaskFailure, Watchdog, supervise

from tests.support.waiting import wait_until

KOPF_MODULE_LOGGER = "kopf._core.reactor.orchestration"
"""Where kopf's orchestrator logs the guard reports of its watchers."""


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def _guarded(coro: Coroutine[Any, Any, Any], name: str, **kwargs: Any) -> list[Any]:
    """Run `coro` as kopf runs its watchers; return kopf's log records of it."""
    logger = logging.getLogger(KOPF_MODULE_LOGGER)
    records = Records()
    logger.addHandler(records)
    previous = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        task = aiotasks.create_guarded_task(coro=coro, name=name, logger=logger, **kwargs)
        await asyncio.wait({task}, timeout=5)
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return [(r, task) for r in records.records]
    finally:
        logger.removeHandler(records)
        logger.setLevel(previous)


async def _fail() -> None:
    raise RuntimeError("Error in the watch-stream: {'code': 429}")


async def _finish() -> None:
    return None


async def _forever() -> None:
    await asyncio.Event().wait()


async def test_a_failed_guarded_task_is_a_failure() -> None:
    logged = await _guarded(_fail(), name="watcher for fleets@None", cancellable=True)
    failures = [watchdog.task_failure(r, t) for r, t in logged]
    assert [f for f in failures if f] == [
        KopfTaskFailure(
            task="watcher for fleets@None",
            error="RuntimeError: Error in the watch-stream: {'code': 429}",
        )
    ]


async def test_the_task_name_falls_back_to_kopfs_message() -> None:
    logged = await _guarded(_fail(), name="watcher for fleets@None", cancellable=True)
    names = [f.task for r, _ in logged if (f := watchdog.task_failure(r))]
    assert names == ["watcher for fleets@none"]  # kopf capitalizes the name


async def test_an_unexpected_end_is_a_failure() -> None:
    logged = await _guarded(_finish(), name="poster of events")
    failures = [f for r, t in logged if (f := watchdog.task_failure(r, t))]
    assert [f.task for f in failures] == ["poster of events"]
    assert "finished unexpectedly" in failures[0].error


async def test_a_cancellation_or_a_finishable_end_is_no_failure() -> None:
    logged = await _guarded(_forever(), name="watcher for fleets@None")  # debug "is cancelled"
    logged += await _guarded(_finish(), name="the command", finishable=True)
    assert logged, "kopf logged nothing: is the test still meaningful?"
    assert [watchdog.task_failure(r, t) for r, t in logged] == [None] * len(logged)


def test_other_records_are_no_failure() -> None:
    """A handler's error (kopf retries it), kopf's other task helpers, another library."""
    for name, path, func in [
        ("kopf.objects", "/kopf/_core/actions/execution.py", "execute_handler_once"),
        ("kopf._core.reactor.running", "/kopf/_cogs/aiokits/aiotasks.py", "stop"),
        ("wsfleet.operator", "/kopf/_cogs/aiokits/aiotasks.py", "guard"),
    ]:
        record = logging.LogRecord(name, logging.ERROR, path, 1, "boom", None, None, func)
        assert watchdog.task_failure(record) is None


async def test_the_watchdog_keeps_the_first_failure_from_any_thread() -> None:
    dog = Watchdog(asyncio.get_running_loop())
    logger = logging.getLogger("kopf._core.test_watchdog")
    with dog.attached(logger):

        def report(name: str) -> None:
            try:
                raise RuntimeError(name)
            except RuntimeError:
                # what aiotasks.guard logs, but from a thread
                record = logger.makeRecord(
                    logger.name,
                    logging.ERROR,
                    aiotasks.__file__,
                    1,
                    "x",
                    None,
                    sys.exc_info(),
                    "guard",
                )
                logger.handle(record)

        thread = threading.Thread(target=report, args=("first",))
        thread.start()
        thread.join()
        failure = await asyncio.wait_for(dog.tripped(), timeout=5)
        report("second")
    assert failure.error == "RuntimeError: first"
    assert dog.failure == failure
    assert dog not in logger.handlers


async def _kopf_that_stays_deaf(stop: asyncio.Event) -> None:
    """Like kopf before #787 is fixed: a watcher dies, the operator runs on until stopped."""
    await _guarded(_fail(), name="watcher for fleets@None", cancellable=True)
    await stop.wait()


async def _kopf_that_stops(stop: asyncio.Event) -> None:
    """Like kopf 1.45: the watcher's error ends the operator."""
    await _guarded(_fail(), name="watcher for fleets@None", cancellable=True)
    raise RuntimeError("Error in the watch-stream")


@pytest.mark.parametrize("kopf_run", [_kopf_that_stays_deaf, _kopf_that_stops])
async def test_supervise_stops_kopf_and_raises(
    kopf_run: Any,
) -> None:
    with capture_logs() as logs, pytest.raises(KopfTaskFailed) as failed:
        await asyncio.wait_for(supervise(kopf_run), timeout=10)
    assert failed.value.failure.task == "watcher for fleets@None"
    events = [e for e in logs if e["event"] == "operator.kopf_task_failed"]
    assert events == [
        {
            "event": "operator.kopf_task_failed",
            "log_level": "error",
            "task": "watcher for fleets@None",
            "error": "RuntimeError: Error in the watch-stream: {'code': 429}",
        }
    ]


@pytest.mark.parametrize("flag", [asyncio.Event, threading.Event])
async def test_supervise_relays_the_stop_flag(flag: type[asyncio.Event | threading.Event]) -> None:
    stop_flag = flag()
    seen: list[asyncio.Event] = []

    async def kopf_run(stop: asyncio.Event) -> None:
        seen.append(stop)
        await stop.wait()

    task = asyncio.create_task(supervise(kopf_run, stop_flag))
    await wait_until(lambda: seen, timeout_s=5, message="kopf started")
    assert not task.done()
    stop_flag.set()
    await asyncio.wait_for(task, timeout=5)


async def test_supervise_lets_other_errors_through() -> None:
    async def kopf_run(stop: asyncio.Event) -> None:
        raise ValueError("not a task failure")

    with pytest.raises(ValueError, match="not a task failure"):
        await supervise(kopf_run)


def test_the_cli_exits_1_when_a_kopf_task_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    async def failed(settings: cli.OperatorSettings) -> None:
        raise KopfTaskFailed(KopfTaskFailure("watcher for fleets@None", "WatchingError: 429"))

    monkeypatch.setattr(cli, "run_operator", failed)
    import argparse

    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["operator", "-A", "--metrics-port", "0"])
    assert args.func(args) == 1
