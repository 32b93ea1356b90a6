"""The decision log: every decision appended to a Redis Stream after its response, never before.

`Runtime.decide` hands the finished decision to `DecisionLogWriter.submit`, which only puts it
on a bounded in-process queue (no I/O, no encoding on the request's path). A background task
started in `start()` drains the queue in batches, encodes each entry (`log_format`) and writes
the batch in one non-transactional pipeline:

    XADD nba:{log}:decisions MAXLEN ~ <decision_log_maxlen> * d <msgpack>
    HSET nba:{c:<customer>}:d:<decision_id> <action_id> <selection probability> ...
    PEXPIRE nba:{c:<customer>}:d:<decision_id> <longest response window of the served actions>

The per-decision record is what RecordOutcome checks ("was this action served in this
decision, and with which probability?"). Because it is written after the response, a very
fast outcome could overtake it; `ensure_recorded` closes that gap (see its docstring).

Queue full (the store cannot keep up, or is down): the decision is still answered, its log
entry is dropped and counted (`dropped_queue_full`); outcomes for it then get NOT_FOUND. Latency
of the decision API wins over completeness of the log under overload, and the counter makes the
loss visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from nba_service.store.keys import customer_tag
from nba_service.store.log_format import encode_decision, encode_outcome
from nba_service.types import Decision, OutcomeEvent

log = logging.getLogger(__name__)

__all__ = [
    "DECISIONS_STREAM",
    "OUTCOMES_STREAM",
    "DecisionLogWriter",
    "decision_record_key",
    "decision_time_ms",
]

# One hash tag for both streams: the exporter reads them from one node, and XREADGROUP over
# both in one call stays legal on a Cluster.
DECISIONS_STREAM = "nba:{log}:decisions"
OUTCOMES_STREAM = "nba:{log}:outcomes"


def decision_record_key(customer_id: str, decision_id: str) -> str:
    """The per-decision record: served action id -> selection probability, TTL = window."""
    return f"nba:{customer_tag(customer_id)}:d:{decision_id}"


def decision_time_ms(decision_id: str) -> int | None:
    """The ms timestamp a decision id starts with (decide.new_decision_id), None if not one."""
    try:
        return int(decision_id[:12], 16) if len(decision_id) >= 12 else None
    except ValueError:
        return None


@dataclass
class LogCounters:
    submitted: int = 0
    written: int = 0
    dropped_queue_full: int = 0
    write_errors: int = 0
    outcomes_written: int = 0
    waits_for_pending: int = 0


class DecisionLogWriter:
    def __init__(
        self,
        client: Any,
        schema_hash: str,
        *,
        queue_size: int = 10_000,
        batch_size: int = 256,
        linger_s: float = 0.0,
        maxlen: int = 1_000_000,
        outcome_maxlen: int = 1_000_000,
        settle_ms: int = 1000,
    ) -> None:
        self._client = client
        self._schema_hash = schema_hash
        self._queue: asyncio.Queue[tuple[int, Decision]] = asyncio.Queue(queue_size)
        self._batch_size = batch_size
        self._linger_s = linger_s
        self._maxlen = maxlen
        self._outcome_maxlen = outcome_maxlen
        self._settle_ms = settle_ms
        self._seq = 0
        self._done_seq = 0  # every entry with seq <= this has been written (or failed)
        self._pending: dict[str, int] = {}  # decision id -> seq, while queued or being written
        self._progress = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        # Candidate ids per shared candidate array (the engine's read-only ones): every decision
        # of a channel/placement logs the same list, so it is built once, not per decision.
        self._ids_cache: dict[int, tuple[np.ndarray, list[str]]] = {}
        self.counters = LogCounters()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="decision-log-writer")

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Write what is queued (bounded by `timeout_s`), then stop the writer task."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flush(), timeout_s)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        if self._queue.qsize():
            self.counters.write_errors += self._queue.qsize()
            log.error("decision log: %d entries not written at shutdown", self._queue.qsize())

    async def flush(self) -> None:
        """Wait until everything submitted so far has been written (or has failed)."""
        target = self._seq
        await self._wait_done(target)

    async def _wait_done(self, seq: int) -> None:
        async with self._progress:
            await self._progress.wait_for(lambda: self._done_seq >= seq)

    @property
    def backlog(self) -> int:
        """Entries queued, not yet taken by the writer."""
        return self._queue.qsize()

    @property
    def capacity(self) -> int:
        return self._queue.maxsize

    # ------------------------------------------------------------------ the request side
    def submit(self, decision: Decision) -> bool:
        """Queue a finished decision for logging; never blocks. False if it was dropped."""
        if decision.trace is None:
            return False
        self._seq += 1
        try:
            self._queue.put_nowait((self._seq, decision))
        except asyncio.QueueFull:
            # Nothing waits for this seq, but _done_seq must still be able to pass it.
            self._seq -= 1
            self.counters.dropped_queue_full += 1
            return False
        self._pending[decision.decision_id] = self._seq
        self.counters.submitted += 1
        return True

    async def ensure_recorded(self, customer_id: str, decision_id: str) -> None:
        """Make sure a decision's record is in the store before an outcome is checked against it.

        The record is written after the response, so a client may report an outcome before the
        writer got to it. In this process: if the decision is still queued, wait for its batch
        (the writer drains in order, so this is bounded by the queue). From another process (a
        sibling worker or replica answered the Decide): if the decision id is younger than
        `settle_ms` and its record is not there yet, poll for it until the id is `settle_ms` old.
        Otherwise nothing to wait for: the record exists, or the decision is unknown, dropped or
        expired, and the outcome check answers NOT_FOUND.
        """
        seq = self._pending.get(decision_id)
        if seq is not None:
            self.counters.waits_for_pending += 1
            await self._wait_done(seq)
            return
        born = decision_time_ms(decision_id)
        if born is None:
            return
        deadline_ms = born + self._settle_ms
        if time.time_ns() // 1_000_000 >= deadline_ms:
            return
        key = decision_record_key(customer_id, decision_id)
        while not await self._client.exists(key):
            left_ms = deadline_ms - time.time_ns() // 1_000_000
            if left_ms <= 0:
                return
            await asyncio.sleep(min(0.005, left_ms / 1000))

    async def append_outcome(self, ev: OutcomeEvent, ts_ms: int, replay: bool = False) -> None:
        """Append an applied outcome to the outcome stream (called right after the Lua applied,
        or by a replay of it when that append was never confirmed: `replay`)."""
        fields = encode_outcome(
            event_id=ev.event_id, decision_id=ev.decision_id, action_id=ev.action_id,
            customer_id=ev.customer_id, outcome=ev.outcome, value=ev.value, ts_ms=ts_ms,
            channel=ev.channel, replay=replay,
        )
        await self._client.xadd(
            OUTCOMES_STREAM, fields, maxlen=self._outcome_maxlen, approximate=True
        )
        self.counters.outcomes_written += 1

    # ------------------------------------------------------------------ the writer
    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            if self._linger_s > 0 and self._queue.qsize() < self._batch_size:
                # Yield to the response being sent and to the next requests; their entries
                # join this batch, so one pipeline carries many.
                await asyncio.sleep(self._linger_s)
            while len(batch) < self._batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._write([d for _, d in batch])
                self.counters.written += len(batch)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A log write must never take the service down; the loss is counted and logged.
                self.counters.write_errors += len(batch)
                log.exception("decision log: %d entries not written", len(batch))
            finally:
                for seq, d in batch:
                    if self._pending.get(d.decision_id) == seq:
                        del self._pending[d.decision_id]
                async with self._progress:
                    self._done_seq = batch[-1][0]
                    self._progress.notify_all()

    async def _write(self, decisions: list[Decision]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for d in decisions:
            blob, record, ttl_ms = self._encode(d)
            pipe.xadd(DECISIONS_STREAM, {b"d": blob}, maxlen=self._maxlen, approximate=True)
            if record:
                key = decision_record_key(d.trace.customer_id, d.decision_id)  # type: ignore[union-attr]
                pipe.hset(key, mapping=record)
                pipe.pexpire(key, ttl_ms)
        await pipe.execute()

    def _encode(self, d: Decision) -> tuple[bytes, Mapping[str, str], int]:
        tr = d.trace
        assert tr is not None
        rt = tr.runtime
        r = tr.ranking
        actions = rt.catalog.actions
        served_idx = np.array([rt.catalog.index_of(a.action_id) for a in d.actions],
                              dtype=np.int64)
        windows = [actions[i].outcomes.response_window_s for i in served_idx]
        # Re-encoding gives the very bytes the model scored: the encoder is deterministic and
        # the customer row is the one the decision used.
        served_rows = rt.encoder.encode(tr.customer_row, served_idx)
        scores = np.stack([r.propensity, r.context_weight, r.value, r.lever, r.priority], axis=1)
        served_scores = [x for a in d.actions
                         for x in (a.propensity, a.context_weight, a.value, a.lever, a.priority)]
        blob = encode_decision(
            decision_id=d.decision_id, ts_ms=tr.ts_ms, customer_id=tr.customer_id,
            channel=tr.channel, placement=tr.placement, request_id=d.request_id,
            model_version=d.model_version, catalog_version=d.catalog_version,
            schema_hash=self._schema_hash,
            explored=bool(getattr(d, "explored", False)),
            control_group=bool(getattr(d, "control_group", False)),
            degraded=d.degraded_reasons, customer_row=tr.customer_row,
            candidate_ids=self._candidate_ids(r.candidates, actions),
            candidate_scores=scores, candidate_stage=r.removed_stage,
            served_ids=[a.action_id for a in d.actions],
            served_probability=[a.selection_probability for a in d.actions],
            served_rows=served_rows, served_windows_s=windows, served_scores=served_scores,
            shadow=_shadow(d),
        )
        record = {a.action_id: repr(float(a.selection_probability)) for a in d.actions}
        ttl_ms = int(max(windows, default=0.0) * 1000)
        return blob, record, ttl_ms


    def _candidate_ids(self, candidates: np.ndarray, actions: Any) -> list[str]:
        hit = self._ids_cache.get(id(candidates))
        if hit is not None and hit[0] is candidates:
            return hit[1]
        ids = [actions[i].id for i in candidates.tolist()]
        if not candidates.flags.writeable:  # shared and immutable: safe to remember
            if len(self._ids_cache) >= 256:
                self._ids_cache.clear()
            self._ids_cache[id(candidates)] = (candidates, ids)
        return ids


def _shadow(d: Decision) -> dict[str, list[float]] | None:
    """The shadow challenger's scores, per candidate in candidate order, keyed by its version."""
    shadow = d.shadow
    if shadow is None:
        return None
    return {shadow.model_version: [float(x) for x in shadow.scores]}
