"""Pure cores: circuit breaker, sliding-window rule, quotas, admission helpers, audit."""

from __future__ import annotations

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st
from wsfleet_gateway.protection.admission import client_ip, connect_key, node_full, ready_for_more
from wsfleet_gateway.protection.audit import AuditLog
from wsfleet_gateway.protection.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from wsfleet_gateway.protection.quotas import TierQuotas, UnknownTierError, may_hold
from wsfleet_gateway.protection.ratelimit import MemoryCounter, decide, window_position


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_half_opens_and_recovers() -> None:
    clock = Clock()
    changes: list[tuple[str, str]] = []
    b = CircuitBreaker(failure_threshold=3, reset_timeout_s=5.0, clock=clock)
    b.on_change(lambda old, new: changes.append((old, new)))
    b.record_failure()
    b.record_failure()
    b.record_success()  # resets the count
    b.record_failure()
    b.record_failure()
    assert b.state == CLOSED
    assert b.allow()
    b.record_failure()
    assert b.state == OPEN
    assert not b.allow()
    assert b.is_open
    clock.now += 5.0
    assert b.state == HALF_OPEN
    assert not b.is_open  # asking does not take the probe
    assert b.allow()  # the probe
    assert not b.allow()  # one probe at a time
    b.record_failure()  # the probe failed: open again
    assert b.state == OPEN
    assert b.opened_total == 2
    clock.now += 5.0
    assert b.allow()
    b.record_success()
    assert b.state == CLOSED
    assert changes == [
        (CLOSED, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, CLOSED),
    ]
    clock.now += 100
    assert b.allow()
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker(0)


def test_half_open_probe_that_never_reports_is_retried_after_the_timeout() -> None:
    clock = Clock()
    b = CircuitBreaker(1, 2.0, clock=clock)
    b.record_failure()
    clock.now += 2.0
    assert b.allow()
    clock.now += 1.0
    assert not b.allow()
    clock.now += 1.0
    assert b.allow()


@given(st.lists(st.booleans(), max_size=60), st.integers(1, 5))
def test_breaker_never_lets_calls_through_while_open(outcomes: list[bool], threshold: int) -> None:
    clock = Clock()
    b = CircuitBreaker(threshold, 1.0, clock=clock)
    streak = 0
    for ok in outcomes:
        if b.state == OPEN:
            assert not b.allow()
            clock.now += 1.0
            continue
        if not b.allow():
            continue
        if ok:
            b.record_success()
            streak = 0
        else:
            b.record_failure()
            streak += 1
        assert b.state in (CLOSED, OPEN)
        if b.state == CLOSED:
            assert streak < threshold


@given(
    limit=st.integers(1, 50),
    times=st.lists(st.floats(0, 59.999), min_size=1, max_size=120),
)
def test_sliding_window_never_allows_more_than_the_limit_in_one_window(
    limit: int, times: list[float]
) -> None:
    counter = MemoryCounter()
    allowed = sum(
        counter.hit("u", limit, 60.0, 6000.0 + t, 1, False).allowed for t in sorted(times)
    )
    assert allowed == min(limit, len(times))


def test_sliding_window_weights_the_previous_window() -> None:
    assert window_position(125.0, 60.0) == (2, 916)
    assert decide(prev=10, cur=0, weight=500, inc=1, limit=10) == (True, 5)
    assert decide(prev=10, cur=5, weight=500, inc=1, limit=10) == (False, 10)
    counter = MemoryCounter()
    for _ in range(10):
        assert counter.hit("u", 10, 60.0, 60.0, 1, False).allowed
    assert not counter.hit("u", 10, 60.0, 61.0, 1, False).allowed
    assert not counter.hit("u", 10, 60.0, 90.0, 1, False).allowed  # same window: 10 used
    # next window, half-way: 10 * 0.5 from the previous window + 0 → room again
    assert counter.hit("u", 10, 60.0, 150.0, 1, False).allowed
    assert counter.hit("u", 10, 60.0, 300.0, 0, False).count == 0


def test_memory_counter_stays_bounded() -> None:
    counter = MemoryCounter(max_keys=10)
    for i in range(100):
        counter.hit(f"k{i}", 5, 1.0, float(i), 1, True)
    assert len(counter._counts) <= 10


def test_rejected_attempts_count_only_when_asked() -> None:
    counter = MemoryCounter()
    for _ in range(5):
        counter.hit("a", 2, 60.0, 60.0, 1, False)
        counter.hit("b", 2, 60.0, 60.0, 1, True)
    assert counter.hit("a", 2, 60.0, 60.0, 0, False).count == 2
    assert counter.hit("b", 2, 60.0, 60.0, 0, True).count == 5


def test_tier_quotas() -> None:
    q = TierQuotas({"free": 3, "paid": 10}, "free")
    assert (q.limit_for("paid"), q.resolve(None), q.limit_for("free")) == (10, "free", 3)
    with pytest.raises(UnknownTierError):
        q.resolve("gold")
    with pytest.raises(ValueError, match="default tier"):
        TierQuotas({"paid": 10}, "free")
    with pytest.raises(ValueError, match=">= 1"):
        TierQuotas({"free": 0}, "free")
    with pytest.raises(ValueError, match="at least one"):
        TierQuotas({}, "free")
    assert may_hold(2, 3, False)
    assert not may_hold(3, 3, False)
    assert may_hold(3, 3, True)
    assert may_hold(3, 3, False, leaving=True)


def test_admission_helpers() -> None:
    assert node_full(9, 1, 10)
    assert not node_full(8, 1, 10)
    assert ready_for_more(8, 10, 0.9)
    assert not ready_for_more(9, 10, 0.9)
    assert client_ip(("10.0.0.1", 5), {}, False) == "10.0.0.1"
    headers = {"x-forwarded-for": "1.2.3.4, 10.0.0.1"}
    assert client_ip(("10.0.0.1", 5), headers, True) == "1.2.3.4"
    assert client_ip(("10.0.0.1", 5), headers, False) == "10.0.0.1"
    assert client_ip(None, {}, True) == "unknown"
    assert connect_key("ada", "10.0.0.1", auth_disabled=False) == "conn:ada"
    assert connect_key("anonymous", "10.0.0.1", auth_disabled=True) == "conn:anon:10.0.0.1"


def test_audit_events_have_stable_names_and_no_secrets() -> None:
    log = AuditLog("n1")
    with structlog.testing.capture_logs() as events:
        log.accepted("ada", "paid", "1.2.3.4")
        log.rejected("rate_limited", "1.2.3.4", "ada", "11 connections")
        log.quota("ada", "free", "c4", 3)
        log.slow_consumer("ada", "n1-7", 2_000_000)
        log.breaker("closed", "open")
        AuditLog("n2", enabled=False).accepted("x", "y", "z")
    names = [e["event"] for e in events]
    assert names == [
        "admission_accepted",
        "admission_rejected",
        "quota_exceeded",
        "slow_consumer_dropped",
        "breaker_state",
    ]
    assert all(e["audit"] is True and e["node"] == "n1" for e in events)


def test_breaker_window_forgets_old_failures() -> None:
    clock = Clock()
    with pytest.raises(ValueError, match="failure_window_s"):
        CircuitBreaker(2, 1.0, failure_window_s=0)
    b = CircuitBreaker(2, 1.0, clock=clock, failure_window_s=10.0)
    b.record_failure()
    clock.now += 11.0  # too long ago to count with the next one
    b.record_failure()
    assert b.state == CLOSED
    clock.now += 5.0
    b.record_failure()  # two within the window
    assert b.state == OPEN
    assert b.opened_total == 1
