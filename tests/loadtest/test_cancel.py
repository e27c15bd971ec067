"""Cancelling a load run stops it at once and closes every connection (issue 23).

A run is cancelled 50 times in a row, each time at a random moment: while
connections are being opened, while replies are in flight, while the
wedding-season scenario retires users. Every cancel must complete within 1 s
and every connection must be gone from the gateway within 2 s of it (the
issue's bounds). Before the fix two things broke this: ``asyncio.wait_for``
on Python 3.11 swallowed a cancel that arrived together with a reply (the
user loop then ran on until the scenario's end), and a cancel during the
WebSocket handshake left the connection open (picows shields the handshake).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

from wsfleet_gateway.app import Gateway

from tests.loadtest.conftest import JWT_SECRET
from tests.support.waiting import wait_until
from wsfleet.loadtest import run_scenario

CANCELS = 50
CANCEL_BOUND_S = 1.0
CLOSE_BOUND_S = 2.0
LATEST_MOMENT_S = 0.6
"""Cancel moments are drawn from [0, this]: the handshakes and the busiest request traffic."""
EARLIEST_PASSES = 60
"""Or from the first this many event-loop passes: TCP connects and WebSocket handshakes."""
SEED = 23


def options(scenario: str, stop: asyncio.Event) -> dict[str, Any]:
    """A run much longer than the test: a cancel that is ignored shows as a run going on."""
    common: dict[str, Any] = {
        "jwt_secret": JWT_SECRET,
        "duration_s": 60.0,
        "think_time_s": 0.01,  # many replies in flight: a cancel often meets one
        "stop": stop,  # only to end a run that ignored its cancel, so the test can report
    }
    if scenario == "photographer":
        return {**common, "connections": 20, "publish_probability": 0.2}
    # 19:48 -> 20:24 of a day at an hour a second: the evening peak, then users retiring
    return {
        **common,
        "connections": 4,
        "compress": 3_600.0,
        "start_hour": 19.8,
        "coordinator_share": 0.1,
        "publish_rate": 50.0,
    }


async def test_cancelling_a_run_at_random_moments_stops_it_and_closes_everything(
    gateway: Gateway,
) -> None:
    rng = random.Random(SEED)
    loop = asyncio.get_running_loop()
    for attempt in range(CANCELS):
        scenario = "photographer" if attempt % 2 == 0 else "wedding-season"
        stop = asyncio.Event()
        task = asyncio.create_task(run_scenario(scenario, gateway.ws_url, options(scenario, stop)))
        # the stimulus, not a wait for a condition: the cancel lands at a random moment,
        # every other time a few loop passes in (while the handshakes are in flight)
        if (attempt // 2) % 2 == 0:
            passes = rng.randrange(EARLIEST_PASSES)
            for _ in range(passes):
                await asyncio.sleep(0)
            moment = f"{passes} loop passes"
        else:
            delay = rng.uniform(0.0, LATEST_MOMENT_S)
            await asyncio.sleep(delay)
            moment = f"{delay:.3f} s"
        where = f"cancel {attempt + 1}/{CANCELS} ({scenario}, {moment} into the run)"
        cancelled_at = loop.time()
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=CANCEL_BOUND_S)
        if not done:
            stop.set()  # end the run that went on, then fail
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise AssertionError(f"{where}: the run was still going {CANCEL_BOUND_S} s later")
        assert task.cancelled(), f"{where}: the run returned instead of being cancelled"
        left = CLOSE_BOUND_S - (loop.time() - cancelled_at)
        await wait_until(
            lambda: gateway.connections == 0,
            timeout_s=max(0.0, left),
            interval_s=0.005,
            message=f"{where}: every connection closed within {CLOSE_BOUND_S} s",
        )
