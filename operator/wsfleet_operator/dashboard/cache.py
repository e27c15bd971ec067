"""Chart payloads shared by the requests of one sampling interval."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

SeriesKey = tuple[tuple[str, str], float]


class SeriesCache:
    """Chart payloads by (fleet, range), shared for `ttl_s`; at most `max_entries`.

    Concurrent requests for one key wait on one computation (its task is
    shielded: a page that goes away does not cancel it for the others), and
    a computation still under way is never started again, however long it
    takes: a slow Prometheus gets one set of queries per key, not one per
    request.
    """

    def __init__(self, ttl_s: float, max_entries: int = 32) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: OrderedDict[SeriesKey, tuple[float, asyncio.Task[dict[str, Any]]]] = (
            OrderedDict()
        )
        self._running: set[asyncio.Task[dict[str, Any]]] = set()

    def __len__(self) -> int:
        return len(self._entries)

    async def get(
        self, key: SeriesKey, compute: Callable[[], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any]:
        now = time.monotonic()
        entry = self._entries.get(key)
        stale = entry is None or (
            entry[1].done() and (now - entry[0] >= self.ttl_s or _failed(entry[1]))
        )
        if entry is None or stale:
            task = asyncio.ensure_future(compute())
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            self._entries[key] = (now, task)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)  # its waiters still hold its task
        else:
            task = entry[1]
        return await asyncio.shield(task)

    async def close(self) -> None:
        tasks = [task for task in self._running if not task.done()]
        self._entries.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)


def _failed(task: asyncio.Task[dict[str, Any]]) -> bool:
    return task.done() and (task.cancelled() or task.exception() is not None)
