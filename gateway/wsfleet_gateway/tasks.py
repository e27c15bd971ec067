"""Stopping background tasks without swallowing a cancel of whoever stops them.

`task.cancel(); with suppress(CancelledError): await task` (or `suppress(BaseException)`)
also swallows a cancel of the *caller* that arrives while it waits, and the caller then
runs on as if nothing happened: the Python 3.11 pitfall behind the load tool's ignored
cancels (issue 23). `asyncio.wait` never raises what the tasks end with, but does raise
the caller's own cancel: that is the idiom here.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

log = structlog.get_logger("wsfleet.gateway.tasks")


async def wait_ended(*tasks: asyncio.Task[Any] | None) -> None:
    """Wait until each task has ended, whatever it ended with (an error is logged).

    A cancel of the caller is raised, never swallowed.
    """
    current = asyncio.current_task()
    pending = {t for t in tasks if t is not None and t is not current}
    if not pending:
        return
    await asyncio.wait(pending)
    for task in pending:
        if not task.cancelled() and task.exception() is not None:
            log.warning("task_failed", task=task.get_name(), error=repr(task.exception()))


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel the tasks and wait until each has ended (see `wait_ended`)."""
    for task in tasks:
        if task is not None and task is not asyncio.current_task():
            task.cancel()
    await wait_ended(*tasks)
