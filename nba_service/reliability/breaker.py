"""A circuit breaker for the online store: an outage costs microseconds, not a timeout per call.

CLOSED: calls go through; outcomes land in a sliding window of one-second buckets. When the
window holds at least `min_calls` outcomes and the failure share reaches `error_rate`, the
breaker OPENs. OPEN: `allow()` answers False at once (no I/O, no await) until `open_s` has passed.
HALF_OPEN: up to `half_open_probes` calls are let through; that many consecutive successes
close the breaker, one failure opens it again for another `open_s`.

Single-threaded by design (one event loop per process): no locks on the hot path.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["BreakerConfig", "BreakerState", "CircuitBreaker"]


class BreakerState(enum.IntEnum):
    # Integer values are what the `nba_store_breaker_state` gauge exports.
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass(frozen=True)
class BreakerConfig:
    window_s: int = 10
    min_calls: int = 20
    error_rate: float = 0.5
    open_s: float = 1.0
    half_open_probes: int = 3

    def __post_init__(self) -> None:
        if self.window_s < 1:
            raise ValueError("window_s must be >= 1")
        if self.min_calls < 1:
            raise ValueError("min_calls must be >= 1")
        if not 0.0 < self.error_rate <= 1.0:
            raise ValueError("error_rate must be in (0, 1]")
        if self.open_s <= 0:
            raise ValueError("open_s must be > 0")
        if self.half_open_probes < 1:
            raise ValueError("half_open_probes must be >= 1")


class CircuitBreaker:
    def __init__(
        self,
        config: BreakerConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState], None] | None = None,
    ) -> None:
        self.config = config or BreakerConfig()
        self._clock = clock
        self._on_change = on_change
        n = self.config.window_s
        # Ring of per-second buckets; _stamp[i] says which second bucket i currently holds.
        self._ok = [0] * n
        self._fail = [0] * n
        self._stamp = [-1] * n
        self.state = BreakerState.CLOSED
        self._opened_at = 0.0
        self._probes_sent = 0
        self._probe_successes = 0
        self.opened_count = 0

    # -- decisions -------------------------------------------------------------------------

    def allow(self) -> bool:
        """May a call go to the store now? False means: fail fast, use the fallback."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            if self._clock() - self._opened_at < self.config.open_s:
                return False
            self._set(BreakerState.HALF_OPEN)
            self._probes_sent = 0
            self._probe_successes = 0
        if self._probes_sent < self.config.half_open_probes:
            self._probes_sent += 1
            return True
        return False

    def record_success(self) -> None:
        if self.state is BreakerState.HALF_OPEN:
            self._probe_successes += 1
            if self._probe_successes >= self.config.half_open_probes:
                self._reset_window()
                self._set(BreakerState.CLOSED)
            return
        if self.state is BreakerState.CLOSED:
            self._ok[self._bucket()] += 1

    def record_failure(self) -> None:
        if self.state is BreakerState.HALF_OPEN:
            self._open()
            return
        if self.state is BreakerState.OPEN:
            return
        self._fail[self._bucket()] += 1
        ok, fail = self.window_counts()
        total = ok + fail
        if total >= self.config.min_calls and fail >= self.config.error_rate * total:
            self._open()

    def release_probe(self) -> None:
        """A half-open probe ended without an outcome (e.g. the caller was cancelled)."""
        if self.state is BreakerState.HALF_OPEN and self._probes_sent > self._probe_successes:
            self._probes_sent -= 1

    # -- window ----------------------------------------------------------------------------

    def window_counts(self) -> tuple[int, int]:
        """(successes, failures) inside the sliding window."""
        now = int(self._clock())
        oldest = now - self.config.window_s + 1
        ok = fail = 0
        for i, stamp in enumerate(self._stamp):
            if stamp >= oldest:
                ok += self._ok[i]
                fail += self._fail[i]
        return ok, fail

    def _bucket(self) -> int:
        second = int(self._clock())
        i = second % self.config.window_s
        if self._stamp[i] != second:
            self._stamp[i] = second
            self._ok[i] = 0
            self._fail[i] = 0
        return i

    def _reset_window(self) -> None:
        n = self.config.window_s
        self._ok = [0] * n
        self._fail = [0] * n
        self._stamp = [-1] * n

    def _open(self) -> None:
        self._opened_at = self._clock()
        self.opened_count += 1
        self._set(BreakerState.OPEN)

    def _set(self, state: BreakerState) -> None:
        if state is not self.state:
            self.state = state
            if self._on_change is not None:
                self._on_change(state)
