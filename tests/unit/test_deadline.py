"""Deadline budgets and the store guard: nothing is sent once the budget is spent."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from nba_service.reliability.breaker import BreakerConfig, BreakerState, CircuitBreaker
from nba_service.reliability.deadline import (
    BudgetExhausted,
    Deadline,
    budget,
    run_with_budget,
    with_deadline,
)
from nba_service.reliability.store_guard import StoreGuard, StoreUnavailable


def test_budget_is_cap_without_a_deadline_and_min_with_one() -> None:
    assert budget(0.25) == 0.25
    token = with_deadline(Deadline(0.1))
    try:
        b = budget(0.25, reserve_s=0.02)
        assert 0.07 < b <= 0.08
        assert budget(0.01) == 0.01
    finally:
        from nba_service.reliability import deadline

        deadline._current.reset(token)


async def test_spent_budget_creates_no_call() -> None:
    made = []

    async def call() -> int:
        made.append(1)
        return 1

    with_deadline(Deadline(0.005))
    with pytest.raises(BudgetExhausted):
        await run_with_budget(call, cap_s=1.0, reserve_s=0.01)
    assert made == []


async def test_slow_call_is_cancelled_at_the_budget() -> None:
    cancelled = asyncio.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with_deadline(Deadline(0.05))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(TimeoutError):
        await run_with_budget(slow, cap_s=1.0)
    assert loop.time() - t0 < 0.5 and cancelled.is_set()


def guard(**kw: object) -> StoreGuard:
    b = CircuitBreaker(BreakerConfig(min_calls=2, error_rate=0.5, open_s=60))
    return StoreGuard(b, cap_s=0.2, reserve_s=0.0, slow_call_s=0.05, **kw)  # type: ignore[arg-type]


async def test_guard_counts_connection_errors_and_opens() -> None:
    kinds: list[str] = []
    g = guard(on_failure=kinds.append)
    with_deadline(None)

    async def down() -> None:
        raise RedisConnectionError("refused")

    for _ in range(2):
        with pytest.raises(StoreUnavailable) as exc:
            await g.call(down)
        assert exc.value.reason == "connection"
    assert g.breaker.state is BreakerState.OPEN
    calls = []

    async def ok() -> int:
        calls.append(1)
        return 1

    with pytest.raises(StoreUnavailable) as exc:
        await g.call(ok)
    assert exc.value.reason == "breaker_open" and calls == []
    assert kinds == ["connection", "connection", "breaker_open"]


async def test_data_errors_and_tight_client_deadlines_do_not_open_the_breaker() -> None:
    g = guard()

    async def wrongtype() -> None:
        raise ResponseError("WRONGTYPE")

    async def slow() -> None:
        await asyncio.sleep(1)

    for _ in range(5):
        with pytest.raises(StoreUnavailable, match="error"):
            await g.call(wrongtype)
    for _ in range(3):
        with_deadline(Deadline(0.01))  # tighter than slow_call_s: the client's choice
        with pytest.raises(StoreUnavailable, match="timeout"):
            await g.call(slow)
    assert g.breaker.state is BreakerState.CLOSED
    with_deadline(None)
    for _ in range(2):  # the store's own cap ran out: that is the store's fault
        with pytest.raises(StoreUnavailable, match="timeout"):
            await g.call(slow)
    assert g.breaker.state is BreakerState.OPEN


async def test_guard_passes_results_and_records_success() -> None:
    g = guard()
    with_deadline(None)

    async def ok() -> str:
        return "v"

    assert await g.call(ok) == "v"
    assert g.breaker.window_counts() == (1, 0)


async def test_lag_monitor_tightens_admission_while_the_loop_runs_late() -> None:
    import time as _time

    from nba_service.reliability.shedder import LagMonitor, LoadShedder

    shedder = LoadShedder(8)
    monitor = LagMonitor(shedder, max_lag_s=0.01, interval_s=0.002)
    monitor.start()
    try:
        for _ in range(5):
            await asyncio.sleep(0)
            _time.sleep(0.05)  # a blocked loop: every wake-up is 50 ms late
        t0 = _time.monotonic()
        while not shedder.lagging:
            assert _time.monotonic() - t0 < 2
            await asyncio.sleep(0.002)
        assert shedder.try_acquire() and shedder.try_acquire()
        assert not shedder.try_acquire()  # a quarter of 8 while lagging
        shedder.release()
        shedder.release()
        t0 = _time.monotonic()
        while shedder.lagging:  # the loop is idle again: the limit is released
            assert _time.monotonic() - t0 < 5
            await asyncio.sleep(0.01)
        assert all(shedder.try_acquire() for _ in range(8))
    finally:
        await monitor.stop()
