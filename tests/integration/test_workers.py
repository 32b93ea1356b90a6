"""`nba serve --workers 2`: two processes answer on one port, one shared embedded store, a
crashed worker is replaced, SIGTERM stops everything."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from pydantic import SecretStr

from nba_service._proto.nba.v1 import decisioning_pb2 as pb
from nba_service._proto.nba.v1 import decisioning_pb2_grpc as rpc
from nba_service.client import build_request
from nba_service.settings import Settings
from nba_service.store.embedded import free_port
from nba_service.workers import (
    THREAD_ENV,
    cpu_count,
    resolve_workers,
    settings_payload,
    worker_env,
    worker_settings,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

START_TIMEOUT_S = 90.0


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as f:
            out += [int(x) for x in f.read().split()]
    return out


def _exe_name(pid: int) -> str:
    try:
        return Path(os.readlink(f"/proc/{pid}/exe")).name
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def _status_by_connection(target: str, attempts: int) -> dict[str, pb.StatusResponse]:
    """GetStatus over `attempts` fresh connections: SO_REUSEPORT routes each to one worker."""
    seen: dict[str, pb.StatusResponse] = {}
    for _ in range(attempts):
        async with grpc.aio.insecure_channel(
            target, options=[("grpc.use_local_subchannel_pool", 1)]
        ) as ch:
            try:
                st = await rpc.AdminStub(ch).GetStatus(pb.GetStatusRequest(), timeout=2.0)
            except grpc.aio.AioRpcError:
                continue
            if st.ready:
                seen[st.details["worker_pid"]] = st
    return seen


def _wait_for_pids(target: str, want: int, proc: subprocess.Popen[bytes],
                   exclude: frozenset[str] = frozenset()) -> set[str]:
    deadline = time.monotonic() + START_TIMEOUT_S
    seen: set[str] = set()
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"supervisor exited with {proc.returncode}"
        seen |= set(asyncio.run(_status_by_connection(target, 6))) - exclude
        # A restarted worker's pid replaces the dead one; keep only live processes.
        seen = {p for p in seen if _alive(int(p))}
        if len(seen) >= want:
            return seen
    raise AssertionError(f"saw workers {seen} on {target}, wanted {want}")


@pytest.fixture(scope="module")
def supervisor(
    model_artifact: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """One supervisor for the module (worker start-up is the slow part); the last test ends
    it with SIGTERM, and each test works on its own too."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("serve") / "serve.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "nba_service.cli", "serve", "--workers", "2",
         "--port", str(port), "--model", str(model_artifact)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        # No store URL: the supervisor starts the embedded store. HTTP port 0: the supervisor
        # picks one free port for both workers' gateways.
        env={**{k: v for k, v in os.environ.items() if k != "NBA_REDIS_URL"},
             "NBA_HTTP_PORT": "0"},
    )
    try:
        yield proc, f"127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()


def test_two_workers_share_one_port_and_one_store(
    supervisor: tuple[subprocess.Popen[bytes], str], model_artifact: Path
) -> None:
    proc, target = supervisor
    pids = _wait_for_pids(target, 2, proc)
    assert len(pids) == 2
    kids = _children(proc.pid)
    # Both answering processes are the supervisor's children, and it started exactly one store.
    assert {int(p) for p in pids} <= set(kids)
    stores = [k for k in kids if _exe_name(k).startswith(("valkey", "redis"))]
    assert len(stores) == 1, [(_exe_name(k), k) for k in kids]

    async def decide_on_each_worker() -> dict[str, tuple[int, bool]]:
        # One connection per worker: Decide and then GetStatus on the same connection, so the
        # pid says which worker made the decision.
        answers: dict[str, tuple[int, bool]] = {}
        deadline = time.monotonic() + START_TIMEOUT_S
        while len(answers) < 2 and time.monotonic() < deadline:
            async with grpc.aio.insecure_channel(
                target, options=[("grpc.use_local_subchannel_pool", 1)]
            ) as ch:
                resp = await rpc.DecisioningStub(ch).Decide(
                    build_request("new-visitor-1", "WEB", "", {"page_type": "home"}, limit=2),
                    timeout=5.0,
                )
                st = await rpc.AdminStub(ch).GetStatus(pb.GetStatusRequest(), timeout=5.0)
                answers[st.details["worker_pid"]] = (len(resp.recommendations), resp.degraded)
        return answers

    answers = asyncio.run(decide_on_each_worker())
    assert set(answers) == pids
    for n_recs, degraded in answers.values():
        # The shared store is empty: a real decision, flagged as a cold start.
        assert n_recs >= 1 and degraded


def test_crashed_worker_is_replaced_and_sigterm_stops_everything(
    supervisor: tuple[subprocess.Popen[bytes], str],
) -> None:
    proc, target = supervisor
    pids = _wait_for_pids(target, 2, proc)
    victim = sorted(pids)[0]
    os.kill(int(victim), signal.SIGKILL)
    survivors = frozenset({victim})
    new = _wait_for_pids(target, 2, proc, exclude=survivors)
    assert victim not in new and len(new) == 2
    kids = _children(proc.pid)
    assert {int(p) for p in new} <= set(kids)

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    for pid in kids:
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)  # polling a real condition (the process is gone) with a deadline
        assert not _alive(pid), f"child {pid} ({_exe_name(pid)}) outlived the supervisor"


def test_worker_environment_pins_native_thread_pools() -> None:
    env = worker_env({"PATH": "/bin", "OMP_NUM_THREADS": "3"})
    assert env["PATH"] == "/bin"
    assert env["OMP_NUM_THREADS"] == "3"  # an operator's explicit choice is kept
    for key in set(THREAD_ENV) - {"OMP_NUM_THREADS"}:
        assert env[key] == "1"
    assert resolve_workers(3) == 3
    assert resolve_workers(0) == len(os.sched_getaffinity(0))
    with pytest.raises(ValueError):
        resolve_workers(-1)


def test_settings_reach_workers_with_secrets_and_sized_pools() -> None:
    s = Settings(port=0, redis_password=SecretStr("s3cret"), model_path=Path("/m"))
    back = Settings.model_validate_json(settings_payload(s))
    assert back.redis_password is not None
    assert back.redis_password.get_secret_value() == "s3cret"
    assert back.model_path == Path("/m") and back.port == 0
    assert worker_settings(s, 2) == {"scoring_threads": max(1, cpu_count() // 2)}
    assert worker_settings(Settings(scoring_threads=3), 2) == {}  # an explicit choice is kept
