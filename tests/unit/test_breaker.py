"""The store circuit breaker: opens on the error rate of a sliding window, half-open probes."""

from __future__ import annotations

import pytest

from nba_service.reliability.breaker import BreakerConfig, BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make(**kw: object) -> tuple[CircuitBreaker, Clock, list[BreakerState]]:
    clock = Clock()
    changes: list[BreakerState] = []
    cfg = BreakerConfig(**{"window_s": 10, "min_calls": 10, "error_rate": 0.5, "open_s": 1.0,
                           "half_open_probes": 2, **kw})  # type: ignore[arg-type]
    return CircuitBreaker(cfg, clock=clock, on_change=changes.append), clock, changes


def test_stays_closed_below_min_calls_even_if_all_fail() -> None:
    b, _, _ = make()
    for _ in range(9):
        assert b.allow()
        b.record_failure()
    assert b.state is BreakerState.CLOSED


def test_opens_at_error_rate_and_fails_fast_until_open_s() -> None:
    b, clock, changes = make()
    for _ in range(5):
        b.record_success()
    for _ in range(4):
        b.record_failure()
    assert b.state is BreakerState.CLOSED  # 4 / 9 < 50 % and below min_calls
    b.record_failure()  # 5 / 10
    assert b.state is BreakerState.OPEN and changes == [BreakerState.OPEN]
    assert not b.allow()
    clock.t += 0.99
    assert not b.allow()
    clock.t += 0.02
    assert b.allow() and b.state is BreakerState.HALF_OPEN


def test_half_open_lets_a_bounded_number_of_probes_through_then_closes() -> None:
    b, clock, changes = make()
    for _ in range(10):
        b.record_failure()
    clock.t += 1.5
    assert b.allow() and b.allow()
    assert not b.allow()  # only two probes at a time
    b.record_success()
    assert b.state is BreakerState.HALF_OPEN
    b.record_success()
    assert b.state is BreakerState.CLOSED
    assert changes == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]
    # The window was reset: old failures do not reopen it on the next failure.
    b.record_failure()
    assert b.state is BreakerState.CLOSED


def test_a_failed_probe_reopens_for_another_open_period() -> None:
    b, clock, _ = make()
    for _ in range(10):
        b.record_failure()
    clock.t += 1.5
    assert b.allow()
    b.record_failure()
    assert b.state is BreakerState.OPEN and b.opened_count == 2
    assert not b.allow()
    clock.t += 1.01
    assert b.allow()


def test_released_probe_frees_its_slot() -> None:
    b, clock, _ = make(half_open_probes=1)
    for _ in range(10):
        b.record_failure()
    clock.t += 2
    assert b.allow() and not b.allow()
    b.release_probe()
    assert b.allow()


def test_window_slides_old_failures_out() -> None:
    b, clock, _ = make(window_s=5)
    for _ in range(6):
        b.record_failure()
    assert b.window_counts() == (0, 6)
    clock.t += 5  # the bucket of those failures has left the window
    assert b.window_counts() == (0, 0)
    for _ in range(9):
        b.record_success()
    for _ in range(4):
        b.record_failure()
    assert b.state is BreakerState.CLOSED  # 4 / 13: the 6 old failures do not count


def test_outage_costs_microseconds_when_open() -> None:
    import time

    b = CircuitBreaker(BreakerConfig(min_calls=1, open_s=60))
    b.record_failure()
    t0 = time.perf_counter()
    for _ in range(10_000):
        assert not b.allow()
    per_call = (time.perf_counter() - t0) / 10_000
    assert per_call < 20e-6


@pytest.mark.parametrize(
    "kw", [{"window_s": 0}, {"min_calls": 0}, {"error_rate": 0}, {"error_rate": 1.5},
           {"open_s": 0}, {"half_open_probes": 0}],
)
def test_bad_config_is_refused(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BreakerConfig(**kw)  # type: ignore[arg-type]
