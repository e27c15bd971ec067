"""The per-connection inbound bandwidth cap: the pure bucket, then a live gateway."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st
from wsfleet_gateway.protection.bandwidth import ACCEPT, CLOSE, REJECT, TokenBucket, burst_bytes

from tests.protection.support import (
    RawClient,
    frame_bytes,
    protected_settings,
    raw_client,
    running,
    token,
)

rates = st.floats(1.0, 1e6)
events = st.lists(st.tuples(st.floats(0.0, 5.0), st.integers(0, 300_000)), max_size=60)


@given(rates, st.floats(1.0, 1e6), events)
def test_accepted_bytes_never_exceed_burst_plus_rate_times_time(
    rate: float, burst: float, steps: list[tuple[float, int]]
) -> None:
    bucket = TokenBucket(rate, burst, max_strikes=1000, now=0.0)
    now = accepted = 0.0
    for gap, size in steps:
        now += gap
        if bucket.take(size, now) == ACCEPT:
            accepted += size
        assert 0.0 <= bucket.tokens <= burst
    assert accepted <= burst + rate * now + 1e-6 * (burst + rate * now)


@given(rates, st.lists(st.tuples(st.floats(0.001, 5.0), st.floats(0.0, 1.0)), max_size=60))
def test_a_client_within_the_rate_is_never_rejected(
    rate: float, steps: list[tuple[float, float]]
) -> None:
    burst = rate * 2
    bucket = TokenBucket(rate, burst, max_strikes=1, now=0.0)
    now = 0.0
    for gap, share in steps:
        now += gap
        size = int(share * min(rate * gap, burst))  # no more than it earned since the last one
        assert bucket.take(size, now) == ACCEPT


@given(st.integers(1, 30), st.integers(1, 100))
def test_close_comes_only_after_max_strikes_rejections(max_strikes: int, extra: int) -> None:
    bucket = TokenBucket(100.0, 100.0, max_strikes, now=0.0)
    verdicts = [bucket.take(1000, 0.0) for _ in range(max_strikes + extra)]
    assert verdicts[:max_strikes] == [REJECT] * max_strikes
    assert set(verdicts[max_strikes:]) == {CLOSE}
    assert bucket.tokens == 100.0  # rejections cost nothing


def test_strikes_leak_away_so_a_client_that_backs_off_is_not_closed() -> None:
    bucket = TokenBucket(100.0, 100.0, max_strikes=2, now=0.0)
    assert bucket.take(1000, 0.0) == REJECT
    assert bucket.take(1000, 0.0) == REJECT
    assert bucket.take(50, 10.0) == ACCEPT  # ten quiet seconds: strikes forgiven
    assert bucket.strikes == 0.0
    assert bucket.take(1000, 10.0) == REJECT
    assert bucket.take(1000, 10.0) == REJECT
    assert bucket.take(1000, 10.0) == CLOSE


@given(rates, st.integers(256, 1 << 24), st.floats(0.1, 10.0))
def test_burst_holds_one_maximal_message(rate: float, max_message: int, seconds: float) -> None:
    burst = burst_bytes(rate, max_message, seconds)
    assert burst >= max_message
    assert burst >= rate * seconds
    assert TokenBucket(rate, burst, 1, now=0.0).take(max_message, 0.0) == ACCEPT


def test_bucket_needs_a_positive_rate() -> None:
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(0.0, 10.0, 1, now=0.0)


def publish(i: int, size: int) -> bytes:
    return json.dumps({"op": "publish", "id": str(i), "channel": "c", "data": "x" * size}).encode()


async def test_over_the_cap_requests_get_rate_limited_and_an_abuser_is_closed_4008() -> None:
    settings = protected_settings(
        bandwidth_bytes_per_s=50, max_message_bytes=400, bandwidth_max_strikes=3
    )
    async with running(settings) as gw:
        headers = {"Authorization": f"Bearer {token('flooder')}"}
        client: RawClient = await raw_client("127.0.0.1", gw.port, headers)

        def flood() -> tuple[list[dict[str, object]], int | None]:
            replies = [client.recv_json()]  # welcome
            frames = b"".join(frame_bytes(publish(i, 300)) for i in range(12))
            with contextlib.suppress(OSError):  # closed before it read them all
                client.sock.sendall(frames)  # ~350 bytes each: one fits the bucket
            code = None
            try:
                while True:
                    replies.append(client.recv_json())
            except ConnectionError as exc:
                code = int(str(exc).rsplit(" ", 1)[-1]) if "closed by" in str(exc) else None
            return replies, code

        try:
            with structlog.testing.capture_logs() as logs:
                replies, code = await asyncio.to_thread(flood)
        finally:
            client.close()
        assert replies[0]["type"] == "welcome"
        assert code == 4008
        # publish 0 fits the bucket (its reply may be cut off by the close); 1, 2, 3... do not
        limited = [r for r in replies if r["type"] == "error"]
        assert len(limited) >= 3
        assert all(r["code"] == "rate_limited" for r in limited)
        assert [r["id"] for r in limited] == [str(i) for i in range(1, len(limited) + 1)]
        assert all(r["type"] in ("published", "error") for r in replies[1:])
        rejected = gw.metrics.registry.get_sample_value(
            "wsfleet_rejections_total", {"reason": "bandwidth"}
        )
        assert rejected == len(limited) + 1  # the rejections, then the close
        audit = [(e["event"], e["action"]) for e in logs if e.get("audit")]
        assert ("bandwidth_exceeded", "rejected") in audit
        assert audit[-1] == ("bandwidth_exceeded", "closed")
        assert all(e["user"] == "flooder" for e in logs if e.get("event") == "bandwidth_exceeded")


async def test_a_rate_limited_fragmented_message_is_dropped_whole() -> None:
    settings = protected_settings(bandwidth_bytes_per_s=50, max_message_bytes=400)
    async with running(settings) as gw:
        headers = {"Authorization": f"Bearer {token('chunky')}"}
        client: RawClient = await raw_client("127.0.0.1", gw.port, headers)

        def exchange() -> list[dict[str, object]]:
            replies = [client.recv_json()]
            client.send_frame(publish(1, 200))  # ~250 of 400 bytes: accepted
            replies.append(client.recv_json())
            client.send_frame(b"x" * 200, fin=False)  # over what is left: rejected, skipped
            replies.append(client.recv_json())
            client.send_frame(b"y" * 10, opcode=0x0, fin=False)  # rest of it: dropped quietly
            client.send_frame(b"y" * 10, opcode=0x0, fin=True)
            client.send_frame(b'{"op":"ping","id":"p"}')  # small: fits what is left
            replies.append(client.recv_json())
            client.send_frame(b"z" * 200, fin=False)  # skipped again...
            replies.append(client.recv_json())
            client.send_frame(b'{"op":"ping","id":"q"}')  # ...and a new message ends the skip
            replies.append(client.recv_json())
            return replies

        try:
            replies = await asyncio.to_thread(exchange)
        finally:
            client.close()
        kinds = [r["type"] for r in replies]
        assert kinds == ["welcome", "published", "error", "pong", "error", "pong"]
        for error in (replies[2], replies[4]):
            assert error["code"] == "rate_limited"
            assert error["id"] is None
        assert [replies[3]["id"], replies[5]["id"]] == ["p", "q"]
        rejected = gw.metrics.registry.get_sample_value(
            "wsfleet_rejections_total", {"reason": "bandwidth"}
        )
        assert rejected == 2
        assert gw.metrics.registry.get_sample_value(
            "wsfleet_rejections_total", {"reason": "bad_request"}
        ) in (None, 0.0)


async def test_no_cap_without_protection_or_with_zero_rate() -> None:
    settings = protected_settings(bandwidth_bytes_per_s=0)
    async with running(settings) as gw:
        assert gw.ws.bandwidth is None
    async with running(protected_settings(protection=False)) as gw:
        assert gw.ws.bandwidth is None
    async with running(protected_settings(max_message_bytes=300_000)) as gw:
        assert gw.ws.bandwidth == (102400.0, 300_000.0, 20)
