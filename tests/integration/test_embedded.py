"""EmbeddedRedis: start, stop, cleanup, and no orphans when the parent dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nba_service.store.embedded import EmbeddedRedis, EmbeddedRedisError, die_with_parent_launch

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it is dead for our purposes
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _wait_until(cond: object, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_start_serve_stop_cleans_up() -> None:
    server = EmbeddedRedis(tcp_port=True)
    with server:
        assert server.url.startswith("unix:///") and server.url.endswith(".sock")
        client = server.client()
        assert client.ping() and client.config_get("save")["save"] in ("", b"")
        client.close()
        tmp = server.dir
        assert server.tcp_url.startswith("redis://127.0.0.1:")
    assert not tmp.exists() and not server.running
    server.stop()  # idempotent
    with pytest.raises(EmbeddedRedisError, match="not started"):
        _ = server.url


def test_bad_binary_is_a_clear_error(tmp_path: Path) -> None:
    fake = tmp_path / "fake-server"
    fake.write_text("#!/bin/sh\necho 'cannot start: bad config' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(EmbeddedRedisError, match="exited with code 3.*bad config"):
        EmbeddedRedis(str(fake)).start()
    with pytest.raises(EmbeddedRedisError, match="cannot run"):
        EmbeddedRedis(str(tmp_path / "missing")).start()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_server_dies_with_its_parent() -> None:
    code = (
        "import sys\n"
        "from nba_service.store.embedded import EmbeddedRedis\n"
        "s = EmbeddedRedis().start()\n"
        "print(s._proc.pid, flush=True)\n"
        "sys.stdin.read()\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parents[2])
    assert parent.stdout is not None
    server_pid = int(parent.stdout.readline())
    try:
        assert _alive(server_pid)
        parent.send_signal(signal.SIGKILL)  # no atexit, no finally: only the kernel can clean up
        parent.wait(5)
        assert _wait_until(lambda: not _alive(server_pid), 5.0), "server outlived its parent"
    finally:
        if _alive(server_pid):
            os.kill(server_pid, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_no_python_runs_between_fork_and_exec_beside_grpc(monkeypatch: pytest.MonkeyPatch) -> None:
    # A preexec_fn makes subprocess use fork(), which runs gRPC's fork handlers; with gRPC
    # threads alive they have aborted the child (SIGABRT) before it could exec the server.
    import grpc  # noqa: F401  (what the servers and the tests have loaded)

    cmd, preexec = die_with_parent_launch(["valkey-server", "--port", "0"])
    assert preexec is None
    assert cmd[-3:] == ["valkey-server", "--port", "0"]
    monkeypatch.setenv("PATH", "/nonexistent")  # no setpriv: still no preexec_fn beside gRPC
    assert die_with_parent_launch(["valkey-server"]) == (["valkey-server"], None)


def test_server_started_from_a_short_lived_thread_outlives_it() -> None:
    # The death signal follows the forking thread; by default it is only armed on the main
    # thread, so a server started from a worker thread keeps serving after that thread ends.
    box: list[EmbeddedRedis] = []
    worker = threading.Thread(target=lambda: box.append(EmbeddedRedis().start()))
    worker.start()
    worker.join(10)
    assert box, "server did not start"
    server = box[0]
    client = server.client()
    try:
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:  # a SIGTERMed server would stop answering in ms
            assert client.ping() and server.running
            time.sleep(0.05)
    finally:
        client.close()
        server.stop()
