"""`nba demo` end to end, as a newcomer runs it: a separate process, real store, real gRPC."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_demo_prints_ranked_decisions_and_exits_zero() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "nba_service.cli", "demo", "--customers", "300"],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "loaded 300 customers, rejected 0" in out
    assert out.count("decision ") == 4
    assert "DEGRADED: cold_start:unknown_customer" in out
    # Every sample decision has a ranked first action with a treatment and reasons.
    assert out.count("\n   1  ") == 4
    assert out.count("reasons: ") >= 4
