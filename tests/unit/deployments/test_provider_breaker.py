"""Circuit breaker state machine (injected clock) and retry timing (full jitter, Retry-After parsing)."""

from __future__ import annotations

import random

import pytest

from deployments.breaker import BreakerConfig, CircuitBreaker
from deployments.retry import RetryConfig, backoff_s, parse_retry_after
from tests.unit.deployments.provider_fakes import FakeClock


def breaker(**cfg) -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock()
    return CircuitBreaker(BreakerConfig(**cfg), clock), clock


def test_opens_after_consecutive_failures_and_success_resets_the_count():
    b, _ = breaker(failure_threshold=3, min_calls=100)
    b.record_failure()
    b.record_failure()
    b.record_success()
    b.record_failure()
    b.record_failure()
    assert b.state == "closed" and b.healthy
    b.record_failure("HTTP 500")
    assert b.state == "open" and not b.healthy and not b.acquire()
    assert b.snapshot()["last_failure"] == "HTTP 500"


def test_opens_on_failure_rate_within_window():
    b, clock = breaker(failure_threshold=100, window_s=10, failure_rate=0.5, min_calls=4)
    for ok in (True, False, True):
        b.record_success() if ok else b.record_failure()
    assert b.state == "closed"  # only 3 calls: below min_calls
    b.record_failure()  # 2 of 4 failed
    assert b.state == "open"


def test_old_calls_leave_the_window():
    b, clock = breaker(failure_threshold=100, window_s=10, failure_rate=0.5, min_calls=4)
    b.record_failure()
    b.record_failure()
    b.record_failure()
    clock.advance(11)
    b.record_success()
    b.record_success()
    b.record_success()
    b.record_failure()  # window now: 3 ok, 1 failed
    assert b.state == "closed"


def test_half_open_after_cool_down_lets_one_probe_and_success_closes():
    b, clock = breaker(failure_threshold=1, open_s=30)
    b.record_failure()
    clock.advance(29.9)
    assert b.state == "open" and b.retry_in_s() == pytest.approx(0.1)
    clock.advance(0.1)
    assert b.state == "half_open" and b.healthy
    assert b.acquire() is True
    assert b.acquire() is False  # one probe at a time
    b.record_success()
    assert b.state == "closed" and b.acquire() and b.acquire()


def test_failed_probe_reopens_for_a_full_cool_down():
    b, clock = breaker(failure_threshold=1, open_s=30)
    b.record_failure()
    clock.advance(30)
    assert b.acquire()
    b.record_failure()
    assert b.state == "open"
    clock.advance(29)
    assert b.state == "open"
    clock.advance(1)
    assert b.state == "half_open"


def test_released_probe_frees_the_slot_and_more_probes_are_configurable():
    b, clock = breaker(failure_threshold=1, open_s=1, half_open_probes=2)
    b.record_failure()
    clock.advance(1)
    assert b.acquire() and b.acquire() and not b.acquire()
    b.release()
    assert b.acquire()


def test_late_success_does_not_close_an_open_breaker():
    b, _ = breaker(failure_threshold=1)
    b.record_failure()
    b.record_success()
    assert b.state == "open"


def test_snapshot_is_plain_data():
    b, _ = breaker()
    assert b.snapshot() == {"state": "closed", "healthy": True, "consecutive_failures": 0,
                            "retry_in_s": 0.0, "last_failure": None}


# -- retry timing ---------------------------------------------------------------------------------
def test_full_jitter_stays_within_the_growing_cap():
    cfg = RetryConfig(backoff_base_s=0.5, backoff_max_s=3.0)
    rng = random.Random(1)
    for attempt, cap in enumerate([0.5, 1.0, 2.0, 3.0, 3.0]):
        draws = [backoff_s(attempt, cfg, rng) for _ in range(500)]
        assert all(0 <= d <= cap for d in draws)
        assert max(draws) > 0.9 * cap and min(draws) < 0.1 * cap  # spread over the whole range


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("2", 2.0),
        (" 1.5 ", 1.5),
        ("0", 0.0),
        ("-3", 0.0),
        ("Tue, 14 Nov 2023 22:13:30 GMT", 10.0),
        ("Tue, 14 Nov 2023 22:13:10 GMT", 0.0),  # in the past
        ("Tue, 14 Nov 2023 22:13:25 -0000", 5.0),  # naive date is UTC
        ("soon", None),
        ("", None),
        (None, None),
        ("nan", None),
    ],
)
def test_parse_retry_after(header, expected):
    now = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 GMT
    got = parse_retry_after(header, lambda: now)
    assert got == (pytest.approx(expected) if expected is not None else None)


def test_retry_config_bounds():
    with pytest.raises(ValueError):
        RetryConfig(max_retries=50)
    with pytest.raises(ValueError):
        RetryConfig(max_retries=-1)


def test_reading_health_does_not_move_the_breaker() -> None:
    from deployments.breaker import BreakerConfig, CircuitBreaker

    now = [0.0]
    b = CircuitBreaker(BreakerConfig(failure_threshold=1, open_s=10), clock=lambda: now[0])
    b.record_failure("x")
    now[0] = 11
    assert b.snapshot()["state"] == "half_open" and b.healthy  # what a poll sees
    assert b._state == "open"  # ...without taking the half-open step itself
    assert b.acquire() and not b.acquire()  # the one probe is still there for a real call
