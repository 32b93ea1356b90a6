"""The bulk loader against a real valkey-server: validation, rejects, idempotency, formats."""

from __future__ import annotations

import csv
import gzip
import logging
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from features.encoding import encode_batch_values
from features.packing import pack, unpack
from features.schema import FeatureSchema, Source
from nba_service.store.keys import features_key
from nba_service.store.loader import LoadError, load_file

pytestmark = pytest.mark.integration

TS = 1_700_000_000_000

GOOD = [
    {"customer_id": "1001", "age": "34", "income": "51000.5", "segment": "gold",
     "region": "north", "has_credit_card": "yes", "consent_sms": "0", "tenure_months": "7.9"},
    {"customer_id": "1002", "age": "", "income": "1e5", "segment": "", "region": "west",
     "has_credit_card": "False", "consent_sms": "", "tenure_months": "120"},
    {"customer_id": " 1003 ", "age": "71", "income": "-3", "segment": "vip", "region": "",
     "has_credit_card": "T", "consent_sms": "1", "tenure_months": ""},
]
BAD = [
    {"customer_id": "2001", "age": "forty", "income": "1", "segment": "gold", "region": "north",
     "has_credit_card": "yes", "consent_sms": "1", "tenure_months": "1"},
    {"customer_id": "2002", "age": "30", "income": "1", "segment": "platinum", "region": "mars",
     "has_credit_card": "yes", "consent_sms": "1", "tenure_months": "1"},
    {"customer_id": "", "age": "30", "income": "1", "segment": "gold", "region": "north",
     "has_credit_card": "yes", "consent_sms": "1", "tenure_months": "1"},
    {"customer_id": "20{04}", "age": "30", "income": "inf", "segment": "gold", "region": "north",
     "has_credit_card": "maybe", "consent_sms": "1", "tenure_months": "1"},
]


def _write_csv(path: Path, rows: list[dict[str, str]], extra: bool = True) -> Path:
    fields = list(rows[0]) + (["favourite_colour", "session_page_views"] if extra else [])
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({**r, "favourite_colour": "blue", "session_page_views": "3"} if extra
                       else r)
    return path


def _expected(schema: FeatureSchema, row: dict[str, str]) -> np.ndarray:
    """What training would see for the same raw values: the store must hold exactly that."""
    raw = {k: (v if v != "" else None) for k, v in row.items()}
    values = encode_batch_values(schema, raw)
    # the store keeps NaN for a blank cell (imputed at read time, reported as missing)
    for i, spec in enumerate(schema.of(Source.BATCH)):
        if spec.name in raw and raw[spec.name] is None:
            values[i] = math.nan
    return values


def _stored(client: redis.Redis, schema: FeatureSchema, cid: str) -> np.ndarray:
    blob = client.get(features_key(cid))
    assert isinstance(blob, bytes), f"customer {cid} not stored"
    rec = unpack(schema, blob)
    assert rec.ts_ms == TS
    return rec.vector


def test_csv_valid_rows_loaded_bad_rows_rejected_with_reasons(
    tmp_path: Path, redis_sync: redis.Redis, demo_schema: FeatureSchema,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rows = [GOOD[0], BAD[0], GOOD[1], BAD[1], BAD[2], GOOD[2], BAD[3]]
    src = _write_csv(tmp_path / "customers.csv", rows)
    # a customer that is already stored keeps its value when its new row is rejected
    redis_sync.set(features_key("2001"), pack(demo_schema, {"age": 50}, TS))
    with caplog.at_level(logging.WARNING):
        report = load_file(src, redis_sync, demo_schema, batch_size=2, progress=False, ts_ms=TS)
    assert (report.loaded, report.rejected) == (3, 4)
    assert report.ignored_columns == ("favourite_colour", "session_page_views")
    assert "favourite_colour" in caplog.text and "imputed with defaults" in caplog.text
    assert "income" not in report.imputed_columns and "balance" in report.imputed_columns
    for row in GOOD:
        cid = row["customer_id"].strip()
        got, want = _stored(redis_sync, demo_schema, cid), _expected(demo_schema, row)
        assert got.tobytes() == want.tobytes(), cid
    assert redis_sync.dbsize() == 4  # 3 loaded + the untouched 2001
    kept = redis_sync.get(features_key("2001"))
    assert isinstance(kept, bytes) and unpack(demo_schema, kept).vector[0] == 50
    assert redis_sync.get(features_key("2002")) is None

    assert report.reasons_path == tmp_path / "customers.csv.rejects.csv"
    with open(report.reasons_path, newline="") as fh:
        rejected = list(csv.DictReader(fh))
    assert [(r["row"], r["customer_id"]) for r in rejected] == [
        ("2", "2001"), ("4", "2002"), ("5", ""), ("7", "20{04}")]
    assert rejected[0]["reasons"] == "age: not a finite number 'forty'"
    assert rejected[1]["reasons"] == (
        "segment: unknown category 'platinum'; region: unknown category 'mars'")
    assert rejected[2]["reasons"] == "customer_id: missing customer id"
    assert "customer id must not contain" in rejected[3]["reasons"]
    assert "income: not a finite number 'inf'" in rejected[3]["reasons"]
    assert "has_credit_card: not a bool 'maybe'" in rejected[3]["reasons"]
    assert report.rejected_by_column["segment"] == 1
    summary = report.summary()
    assert "loaded 3 customers, rejected 4" in summary and str(report.reasons_path) in summary


def test_rerun_is_idempotent(
    tmp_path: Path, redis_sync: redis.Redis, demo_schema: FeatureSchema
) -> None:
    src = _write_csv(tmp_path / "c.csv", [*GOOD, BAD[1]], extra=False)
    reject = tmp_path / "rejects.csv"
    first = load_file(src, redis_sync, demo_schema, progress=False, ts_ms=TS,
                      reject_report=reject)
    snapshot = {k: redis_sync.get(k) for k in redis_sync.keys("*")}
    report_text = reject.read_text()
    second = load_file(src, redis_sync, demo_schema, progress=False, ts_ms=TS,
                       reject_report=reject)
    assert (first.loaded, first.rejected) == (second.loaded, second.rejected) == (3, 1)
    assert {k: redis_sync.get(k) for k in redis_sync.keys("*")} == snapshot
    assert reject.read_text() == report_text


def test_parquet_typed_columns(
    tmp_path: Path, redis_sync: redis.Redis, demo_schema: FeatureSchema
) -> None:
    table = pa.table({
        "customer_id": pa.array([5, 6, 7], pa.int64()),
        "age": pa.array([30, None, 45], pa.int32()),
        "income": pa.array([1.5, float("nan"), 2e5], pa.float64()),
        "segment": pa.array(["vip", None, "student"]).dictionary_encode(),
        "has_mortgage": pa.array([True, False, None]),
        "num_products": pa.array([2.7, 1.0, float("inf")]),
    })
    src = tmp_path / "c.parquet"
    pq.write_table(table, src)
    report = load_file(src, redis_sync, demo_schema, progress=False, ts_ms=TS)
    assert (report.loaded, report.rejected) == (2, 1)
    names = [s.name for s in demo_schema.of(Source.BATCH)]
    five = _stored(redis_sync, demo_schema, "5")
    assert five[names.index("age")] == 30 and five[names.index("income")] == 1.5
    assert five[names.index("segment")] == 3 and five[names.index("has_mortgage")] == 1
    assert five[names.index("num_products")] == 2  # int feature: floored like FeatureSpec.encode
    assert five[names.index("tenure_months")] == 12  # absent column: default
    six = _stored(redis_sync, demo_schema, "6")
    assert math.isnan(six[names.index("age")]) and math.isnan(six[names.index("segment")])
    assert six[names.index("has_mortgage")] == 0
    assert redis_sync.get(features_key("7")) is None  # inf rejected


def test_gzipped_csv_and_header_only(
    tmp_path: Path, redis_sync: redis.Redis, demo_schema: FeatureSchema
) -> None:
    report = load_file(_write_csv(tmp_path / "c.csv.gz", GOOD), redis_sync, demo_schema,
                       progress=False, ts_ms=TS)
    assert report.loaded == 3 and report.reasons_path is None
    empty = tmp_path / "empty.csv"
    empty.write_text("customer_id,age\n")
    assert load_file(empty, redis_sync, demo_schema, progress=False).loaded == 0


def test_unloadable_files_are_clear_errors(
    tmp_path: Path, redis_sync: redis.Redis, demo_schema: FeatureSchema
) -> None:
    src = tmp_path / "c.csv"
    src.write_text("id,age\n1,30\n")
    with pytest.raises(LoadError, match="no id column 'customer_id'"):
        load_file(src, redis_sync, demo_schema, progress=False)
    assert load_file(src, redis_sync, demo_schema, id_column="id", progress=False).loaded == 1
    with pytest.raises(LoadError, match="no such file"):
        load_file(tmp_path / "nope.parquet", redis_sync, demo_schema, progress=False)


def test_nba_features_load_cli(
    tmp_path: Path, redis_sync: redis.Redis, redis_url: str, demo_schema: FeatureSchema,
) -> None:
    """The command itself, as a user runs it: counts, the reject report, idempotent re-runs,
    and a non-zero exit when nothing could be loaded."""
    import subprocess
    import sys

    nba = Path(sys.executable).with_name("nba")
    src = _write_csv(tmp_path / "list.csv", [GOOD[0], BAD[0], GOOD[1]])
    rejects = tmp_path / "why.csv"

    def run(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(nba), "features", "load", str(path), "--redis-url", redis_url,
             "--rejects", str(rejects), "--batch-size", "1"],
            capture_output=True, text=True, timeout=120, check=False)

    for _ in range(2):  # the second run changes nothing
        out = run(src)
        assert out.returncode == 0, out.stderr
        assert "loaded 2 customers, rejected 1" in out.stdout
        assert str(rejects) in out.stdout
        assert redis_sync.dbsize() == 2
        with open(rejects, newline="") as fh:
            assert [r["customer_id"] for r in csv.DictReader(fh)] == ["2001"]
    only_bad = _write_csv(tmp_path / "bad.csv", [BAD[0]])
    out = run(only_bad)
    assert out.returncode == 1 and "loaded 0 customers, rejected 1" in out.stdout
    assert redis_sync.dbsize() == 2
