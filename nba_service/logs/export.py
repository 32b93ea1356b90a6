"""`nba logs export`: decision and outcome streams -> partitioned Parquet, exactly once.

Delivery from the streams is at-least-once (a consumer group: entries are read, written, then
XACKed; a crash before the XACK leaves them pending and they are delivered again). The output
is made exactly-once by three rules:

1. **Deterministic files.** A batch of stream entries is written to files named after its first
   and last stream id (`part-<first>_<last>.parquet`, one per partition), through a temporary
   name, fsync and an atomic rename. Re-writing a batch produces the same names.
2. **Acknowledge after the write.** XACK only once every file of the batch is renamed.
3. **Recovery first.** A run starts by re-processing this consumer's pending entries (the batch
   a crashed run had read but not acknowledged): output files whose id range overlaps the
   pending range are deleted first, so a partly written batch is replaced, never duplicated,
   even if the batch size changed between the runs.

Outcomes are exported first (to `outcomes/`), then the decisions whose every served action's
response window (plus `settle_s`) has closed, in stream order; each served action becomes a
labelled row of `impressions/` joined with the exported outcomes, each decision a row of
`decisions/`. Decisions still inside their window stay unread in the stream (held back) until a
later run. One export at a time per group: a lock in the store enforces it (a lock left by a
dead process on this host is taken over). Layout and columns: docs/closed-loop.md.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from features.schema import FeatureSchema
from nba_service.engine.catalog import Catalog
from nba_service.engine.outcome_fields import DEFAULT_OUTCOMES, OutcomeConfig
from nba_service.logs.tables import (
    decisions_table,
    impressions_table,
    outcomes_table,
    utc_date,
)
from nba_service.store.decision_log import DECISIONS_STREAM, OUTCOMES_STREAM
from nba_service.store.log_format import (
    DecisionEntry,
    LogFormatError,
    OutcomeEntry,
    decode_decision,
    decode_outcome,
)

__all__ = ["ExportError", "ExportReport", "Exporter"]

LOCK_KEY = "nba:{log}:export-lock:"
LOCK_TTL_MS = 120_000
_MARKER = "_nba_export.json"

_CHECK_AND_DEL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_CHECK_AND_EXPIRE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


class ExportError(RuntimeError):
    """The export cannot run (lock held, output directory of another group, ...)."""


@dataclass
class ExportReport:
    outcomes: int = 0
    decisions: int = 0
    impressions: int = 0
    files: int = 0
    recovered: int = 0  # pending entries of a crashed run, processed again
    trimmed: int = 0  # pending entries the stream had already trimmed away
    undecodable: int = 0
    held_back: int = 0  # decisions still inside their response window
    duplicate_outcomes: int = 0  # a replayed outcome's second append, dropped

    def summary(self) -> str:
        return (f"exported {self.decisions} decisions ({self.impressions} impressions) and "
                f"{self.outcomes} outcomes into {self.files} files; {self.held_back} decisions "
                f"held back (response window open); recovered {self.recovered}, "
                f"trimmed {self.trimmed}, undecodable {self.undecodable}, duplicate outcomes "
                f"{self.duplicate_outcomes}")


def _id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def _file_name(first: str, last: str) -> str:
    return f"part-{first.replace('-', '.')}_{last.replace('-', '.')}.parquet"


def _file_range(name: str) -> tuple[tuple[int, int], tuple[int, int]] | None:
    if not (name.startswith("part-") and name.endswith(".parquet")):
        return None
    first, _, last = name[5:-8].partition("_")
    try:
        return _id_key(first.replace(".", "-")), _id_key(last.replace(".", "-"))
    except ValueError:
        return None


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


class Exporter:
    def __init__(
        self,
        client: Any,
        out_dir: str | Path,
        schema: FeatureSchema,
        catalog: Catalog | None = None,
        *,
        group: str = "export",
        consumer: str = "exporter",
        batch_size: int = 5000,
        settle_s: float = 60.0,
        progress: bool = True,
        fail_after_batches: int | None = None,
    ) -> None:
        self.client = client
        self.out = Path(out_dir)
        self.schema = schema
        self.catalog = catalog
        self.group = group
        self.consumer = consumer
        self.batch_size = batch_size
        self.settle_ms = int(settle_s * 1000)
        self.progress = progress
        self.fail_after_batches = fail_after_batches
        self._batches = 0
        self._lock_value = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        self._lock_key = LOCK_KEY + group
        self._outcome_cache: dict[str, dict[str, list[OutcomeEntry]]] = {}
        self.report = ExportReport()

    # ------------------------------------------------------------------ entry point
    def run(self, now_ms: int | None = None) -> ExportReport:
        now = int(datetime.now(UTC).timestamp() * 1000) if now_ms is None else now_ms
        self._check_marker()
        self._acquire_lock()
        try:
            for stream in (OUTCOMES_STREAM, DECISIONS_STREAM):
                try:
                    self.client.xgroup_create(stream, self.group, id="0", mkstream=True)
                except Exception as exc:  # BUSYGROUP: it exists already
                    if "BUSYGROUP" not in str(exc):
                        raise
            total = sum(self._lag(s) for s in (OUTCOMES_STREAM, DECISIONS_STREAM))
            with tqdm(total=total, unit="entry", desc="export", disable=not self.progress,
                      leave=False) as bar:
                self._drain(OUTCOMES_STREAM, self._write_outcomes, bar, lambda _: True)
                self._outcome_cache.clear()  # built lazily from the files just written
                self._drain(DECISIONS_STREAM, self._write_decisions, bar,
                            lambda e: self._closed(e, now))
            self.report.held_back = self._lag(DECISIONS_STREAM)
        finally:
            self.client.eval(_CHECK_AND_DEL, 1, self._lock_key, self._lock_value)
        return self.report

    # ------------------------------------------------------------------ bookkeeping
    def _check_marker(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        marker = self.out / _MARKER
        want = {"group": self.group, "decisions": DECISIONS_STREAM, "outcomes": OUTCOMES_STREAM}
        if marker.exists():
            have = json.loads(marker.read_text())
            if have != want:
                raise ExportError(f"{self.out} holds the export of {have}, not {want}: use the "
                                  "same --group for one output directory")
        else:
            marker.write_text(json.dumps(want))

    def _acquire_lock(self) -> None:
        if self.client.set(self._lock_key, self._lock_value, nx=True, px=LOCK_TTL_MS):
            return
        holder = _s(self.client.get(self._lock_key) or b"")
        host, _, rest = holder.partition(":")
        pid = rest.partition(":")[0]
        if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
            # The holder died (killed mid-run): take over its lock, atomically.
            self.client.eval(_CHECK_AND_DEL, 1, self._lock_key, holder)
            if self.client.set(self._lock_key, self._lock_value, nx=True, px=LOCK_TTL_MS):
                return
        raise ExportError(f"another export of group {self.group!r} is running ({holder})")

    def _lag(self, stream: str) -> int:
        for g in self.client.xinfo_groups(stream):
            if _s(g["name"]) == self.group:
                lag = g.get("lag")
                if lag is None:
                    return int(self.client.xlen(stream))
                return int(lag)
        return 0

    def _last_delivered(self, stream: str) -> str:
        for g in self.client.xinfo_groups(stream):
            if _s(g["name"]) == self.group:
                return _s(g["last-delivered-id"])
        return "0-0"

    # ------------------------------------------------------------------ reading
    def _drain(
        self,
        stream: str,
        write: Callable[[list[tuple[str, Any]]], int],
        bar: tqdm,
        ready: Callable[[Any], bool],
    ) -> None:
        table = "outcomes" if stream == OUTCOMES_STREAM else "decisions"
        pending = self.client.xpending(stream, self.group)
        if pending["pending"]:
            lo, hi = _id_key(_s(pending["min"])), _id_key(_s(pending["max"]))
            self._delete_overlapping(table, lo, hi)
            start = "0"
            while True:
                reply = self.client.xreadgroup(self.group, self.consumer, {stream: start},
                                               count=self.batch_size)
                entries = reply[0][1] if reply else []
                if not entries:
                    break
                start = _s(entries[-1][0])
                live = [(_s(i), f) for i, f in entries if f]
                gone = [_s(i) for i, f in entries if not f]
                self.report.recovered += len(entries)
                self.report.trimmed += len(gone)
                if live:
                    self._commit(stream, live, write(live))
                if gone:
                    self.client.xack(stream, self.group, *gone)
        while True:
            after = self._last_delivered(stream)
            peek = self.client.xrange(stream, min=f"({after}", count=self.batch_size)
            n = 0
            while n < len(peek) and ready(peek[n]):
                n += 1
            if n == 0:
                return
            reply = self.client.xreadgroup(self.group, self.consumer, {stream: ">"}, count=n)
            entries = [(_s(i), f) for i, f in (reply[0][1] if reply else [])]
            if [i for i, _ in entries] != [_s(i) for i, _ in peek[:n]]:
                raise ExportError(f"{stream}: entries changed under the export (is another "
                                  f"consumer reading group {self.group!r}?)")
            self._commit(stream, entries, write(entries))
            bar.update(len(entries))

    def _commit(self, stream: str, entries: list[tuple[str, Any]], files: int) -> None:
        self.report.files += files
        self._batches += 1
        if self.fail_after_batches is not None and self._batches >= self.fail_after_batches:
            # Fault injection for the crash-recovery tests: die after the rename, before XACK.
            os._exit(3)
        self.client.xack(stream, self.group, *[i for i, _ in entries])
        self.client.eval(_CHECK_AND_EXPIRE, 1, self._lock_key, self._lock_value, LOCK_TTL_MS)

    def _closed(self, raw: tuple[Any, dict[bytes, bytes]], now_ms: int) -> bool:
        fields = raw[1]
        if not fields or b"d" not in fields:
            return True  # nothing to wait for; written as undecodable
        try:
            e = decode_decision(fields[b"d"])
        except LogFormatError:
            return True
        window_ms = max(e.served_windows_s, default=0.0) * 1000
        return e.ts_ms + window_ms + self.settle_ms <= now_ms

    # ------------------------------------------------------------------ writing
    def _write_outcomes(self, entries: list[tuple[str, Any]]) -> int:
        rows: dict[str, list[OutcomeEntry]] = defaultdict(list)
        for _, fields in entries:
            try:
                o = decode_outcome(fields)
            except LogFormatError:
                self.report.undecodable += 1
                continue
            date = utc_date(o.ts_ms)
            # A replay appends an outcome again when its first append was not confirmed; the
            # first may have landed anyway (earlier in the stream, same time): keep that one.
            if o.replay and self._already_exported(o, date, rows[date]):
                self.report.duplicate_outcomes += 1
                continue
            rows[date].append(o)
        name = _file_name(entries[0][0], entries[-1][0])
        for date, part in rows.items():
            self._write(outcomes_table(part), self.out / "outcomes" / f"date={date}" / name)
            self.report.outcomes += len(part)
        return len(rows)

    def _write_decisions(self, entries: list[tuple[str, Any]]) -> int:
        decoded: list[DecisionEntry] = []
        for _, fields in entries:
            try:
                decoded.append(decode_decision(fields[b"d"]))
            except (LogFormatError, KeyError):
                self.report.undecodable += 1
        name = _file_name(entries[0][0], entries[-1][0])
        parts: dict[tuple[str, str, str], list[DecisionEntry]] = defaultdict(list)
        for e in decoded:
            parts[(e.schema_hash, utc_date(e.ts_ms), e.channel)].append(e)
        self._load_outcomes(decoded)
        files = 0
        action_ids = [a.id for a in self.catalog.actions] if self.catalog else []
        for (sh, date, channel), rows in sorted(parts.items()):
            sub = f"date={date}/decision_channel={channel}"
            if sh == self.schema.hash:
                names: Sequence[str] = self.schema.column_names
                imp_dir = self.out / "impressions" / sub
            else:
                names = [f"f{j:03d}" for j in range(len(rows[0].customer_row))]
                imp_dir = self.out / f"impressions_schema_{sh}" / sub
            imp = impressions_table(
                rows, self._outcomes_of, names, self._outcome_config, schema_hash=sh,
                action_ids=action_ids, first_id=entries[0][0], last_id=entries[-1][0])
            if imp.num_rows:
                self._write(imp, imp_dir / name)
                files += 1
            self._write(decisions_table(rows), self.out / "decisions" / sub / name)
            files += 1
            self.report.decisions += len(rows)
            self.report.impressions += imp.num_rows
        return files

    def _outcome_config(self, action_id: str) -> OutcomeConfig:
        if self.catalog is None:
            return DEFAULT_OUTCOMES
        try:
            return self.catalog.actions[self.catalog.index_of(action_id)].outcomes
        except KeyError:
            return DEFAULT_OUTCOMES

    def _load_outcomes(self, rows: list[DecisionEntry]) -> None:
        if not rows:
            return
        lo = min(e.ts_ms for e in rows) - 86_400_000  # client clocks may run a little behind
        hi = max(e.ts_ms + max(e.served_windows_s, default=0.0) * 1000 for e in rows)
        day = datetime.fromtimestamp(lo / 1000, UTC).date()
        last = datetime.fromtimestamp(hi / 1000, UTC).date()
        while day <= last:
            date = day.isoformat()
            if date not in self._outcome_cache:
                index: dict[str, list[OutcomeEntry]] = defaultdict(list)
                folder = self.out / "outcomes" / f"date={date}"
                for f in sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []:
                    for r in pq.read_table(f).to_pylist():
                        ts = r["outcome_ts"]
                        index[r["decision_id"]].append(OutcomeEntry(
                            r["event_id"], r["decision_id"], r["action_id"], r["customer_id"],
                            r["outcome"], float(r["value"]), int(ts.timestamp() * 1000),
                            r["channel"]))
                self._outcome_cache[date] = index
            day += timedelta(days=1)

    def _already_exported(self, o: OutcomeEntry, date: str, batch: list[OutcomeEntry]) -> bool:
        key = (o.customer, o.event_id)
        if any((b.customer, b.event_id) == key for b in batch):
            return True
        folder = self.out / "outcomes" / f"date={date}"
        for f in sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []:
            t = pq.read_table(f, columns=["customer_id", "event_id"]).to_pydict()
            if key in zip(t["customer_id"], t["event_id"], strict=True):
                return True
        return False

    def _outcomes_of(self, decision_id: str) -> list[OutcomeEntry]:
        out: list[OutcomeEntry] = []
        for index in self._outcome_cache.values():
            out.extend(index.get(decision_id, ()))
        return out

    def _write(self, table: pa.Table, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{path.name}")
        pq.write_table(table, tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def _delete_overlapping(self, table: str, lo: tuple[int, int], hi: tuple[int, int]) -> None:
        tables = [table] if table == "outcomes" else ["decisions", "impressions"]
        roots = [self.out / t for t in tables]
        if table != "outcomes":
            roots += list(self.out.glob("impressions_schema_*"))
        for root in roots:
            for f in root.rglob("*part-*.parquet") if root.is_dir() else []:
                rng = _file_range(f.name.removeprefix(".tmp-"))
                if rng is not None and rng[0] <= hi and lo <= rng[1]:
                    f.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
