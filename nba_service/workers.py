"""`nba serve --workers N`: N server processes on one port, supervised by a parent.

Why processes: one Python process decides on one core at a time (the GIL), so using every core
means one process per core. The workers share the port with SO_REUSEPORT (set in server.py) and
the kernel spreads new connections over them; each worker has its own Redis connections, model
and kernels. The parent does no request work: it starts the embedded store once (when no
`NBA_REDIS_URL` is set) so every worker sees the same data, restarts a worker that dies,
forwards SIGTERM/SIGINT as SIGTERM and waits for a clean shutdown.

A worker's native thread pools are pinned to one thread before anything imports numpy, Numba,
LightGBM or ONNX Runtime: N workers x (threads per pool) > cores would make them fight over
the same cores and turn every tail latency into a scheduling lottery.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nba_service.settings import Settings

log = logging.getLogger("nba.workers")

# Read by the native libraries when they load: must be in the environment before the import.
THREAD_ENV: dict[str, str] = {
    "NUMBA_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
}
# gRPC's own thread pools (completion queues, DNS) stay small: the worker serves on asyncio.
GRPC_ENV: dict[str, str] = {"GRPC_ENABLE_FORK_SUPPORT": "0"}

RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)
STABLE_AFTER_S = 30.0  # a worker up this long resets its restart back-off
MAX_EARLY_FAILURES = 5  # consecutive deaths before first ready: the config is broken, give up
KILL_AFTER_S = 5.0  # beyond the drain grace, before SIGKILL


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def resolve_workers(requested: int) -> int:
    """0 means one worker per usable core."""
    if requested < 0:
        raise ValueError("workers must be >= 0")
    return requested or cpu_count()


def worker_env(base: Mapping[str, str]) -> dict[str, str]:
    """The environment of a worker: the parent's, with thread pools sized to one thread
    (values the operator set explicitly are kept)."""
    env = dict(base)
    for key, value in {**THREAD_ENV, **GRPC_ENV}.items():
        env.setdefault(key, value)
    return env


def settings_payload(settings: Settings) -> bytes:
    """The settings as JSON a worker can validate back, secrets included: pydantic masks
    SecretStr values in its JSON dump, and a worker with a masked password cannot log in."""
    from pydantic import SecretStr

    data = settings.model_dump(mode="json")
    for name, value in settings:
        if isinstance(value, SecretStr):
            data[name] = value.get_secret_value()
    return json.dumps(data).encode()


def worker_settings(settings: Settings, workers: int) -> dict[str, object]:
    """Per-worker overrides of pools sized for a whole machine (unless set explicitly): the
    offloaded-scoring threads of N workers share the same cores."""
    fields = type(settings).model_fields
    if "scoring_threads" in fields and "scoring_threads" not in settings.model_fields_set:
        return {"scoring_threads": max(1, cpu_count() // workers)}
    return {}


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (not listen) a SO_REUSEPORT socket on host:port and keep it for the supervisor's
    lifetime: it turns port 0 into a concrete port every worker can bind, and fails early and
    clearly when someone else (without SO_REUSEPORT) holds the port. A socket that does not
    listen never receives connections, so it does not take a share of the traffic."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host.strip("[]"), port))
    except OSError:
        sock.close()
        raise
    return sock


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    ready_fd: int | None = None
    started_at: float = 0.0
    ready: bool = False
    failures: int = 0  # deaths since the last stable run: drives the back-off
    early_failures: int = 0  # consecutive deaths before ever becoming ready
    restart_at: float | None = None


class Supervisor:
    """Starts, watches and stops the workers. `run()` blocks until shutdown; returns the exit
    code. Event-driven: a selector waits on the workers' ready pipes and on the signal wake-up
    pipe (SIGCHLD, SIGTERM, SIGINT), so nothing polls on a timer except pending restarts."""

    def __init__(self, settings: Settings, workers: int) -> None:
        self.settings = settings
        self.n = resolve_workers(workers)
        self._workers = [_Worker(i) for i in range(self.n)]
        self._stopping = False
        self._exit_code = 0
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        self._embedded: object | None = None
        self._reservation: socket.socket | None = None
        self._http_reservation: socket.socket | None = None
        self.port: int | None = None

    # ------------------------------------------------------------------ lifecycle
    def run(self) -> int:
        os.set_blocking(self._wake_w, False)
        os.set_blocking(self._wake_r, False)
        old_wakeup = signal.set_wakeup_fd(self._wake_w)
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)
        old_handlers = {s: signal.signal(s, self._on_signal) for s in handled}
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        try:
            self._prepare()
            for w in self._workers:
                self._spawn(w)
            self._loop()
        finally:
            self._shutdown()
            for s, h in old_handlers.items():
                signal.signal(s, h)
            signal.set_wakeup_fd(old_wakeup)
            self._sel.close()
            os.close(self._wake_r)
            os.close(self._wake_w)
        return self._exit_code

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # The byte written to the wake-up fd does the work; handlers only record intent.
        if signum in (signal.SIGTERM, signal.SIGINT) and not self._stopping:
            log.info("received %s: stopping %d workers", signal.Signals(signum).name, self.n)
            self._stopping = True

    def _prepare(self) -> None:
        updates: dict[str, object] = {}
        if not self.settings.redis_url:
            from nba_service.store.embedded import EmbeddedRedis

            embedded = EmbeddedRedis()
            embedded.start()
            self._embedded = embedded
            updates["redis_url"] = embedded.url
            log.info("started embedded store at %s (shared by all workers)", embedded.url)
        self._reservation = reserve_port(self.settings.host, self.settings.port)
        self.port = int(self._reservation.getsockname()[1])
        updates["port"] = self.port
        http_port = self._http_port()
        if http_port == 0:
            # "Any free port" must be one port for all workers, chosen here.
            self._http_reservation = reserve_port(self.settings.host, 0)
            updates["http_port"] = int(self._http_reservation.getsockname()[1])
        elif http_port is not None:
            updates["http_port"] = http_port  # fixed: pinned before the gRPC port changes
        updates.update(worker_settings(self.settings, self.n))
        self.settings = self.settings.model_copy(update=updates)

    def _http_port(self) -> int | None:
        """The HTTP gateway port as one worker would resolve it (None: no gateway)."""
        if not hasattr(self.settings, "http_port"):
            return None
        from nba_service.http import resolve_http_port

        return resolve_http_port(self.settings)

    def _spawn(self, w: _Worker) -> None:
        r, wfd = os.pipe()
        cmd = [
            sys.executable, "-m", "nba_service.workers",
            "--index", str(w.index),
            "--ready-fd", str(wfd),
        ]
        # If the supervisor dies, even by SIGKILL, its workers get SIGTERM instead of living on
        # as orphans that hold the port.
        preexec = None
        if sys.platform.startswith("linux"):
            from nba_service.store.embedded import die_with_parent_launch

            cmd, preexec = die_with_parent_launch(cmd)
        try:
            w.proc = subprocess.Popen(
                cmd, env=worker_env(os.environ), pass_fds=(wfd,), preexec_fn=preexec,
                stdin=subprocess.PIPE,
            )
        finally:
            os.close(wfd)
        # Settings go over stdin, not argv: a store URL may carry a password, and argv is
        # visible to every user in `ps`.
        assert w.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            w.proc.stdin.write(settings_payload(self.settings))
        w.proc.stdin.close()
        w.ready_fd, w.ready, w.started_at, w.restart_at = r, False, time.monotonic(), None
        self._sel.register(r, selectors.EVENT_READ, w)
        log.info("worker %d started (pid %d)", w.index, w.proc.pid)

    def _loop(self) -> None:
        while not self._stopping:
            timeout = self._next_restart_in()
            for key, _ in self._sel.select(timeout):
                if key.data is None:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 512)
                else:
                    self._on_ready_pipe(key.data)
            self._reap()
            self._restart_due()

    # ------------------------------------------------------------------ events
    def _on_ready_pipe(self, w: _Worker) -> None:
        assert w.ready_fd is not None
        data = b""
        with contextlib.suppress(BlockingIOError):
            data = os.read(w.ready_fd, 64)
        if data.startswith(b"ready") and not w.ready:
            w.ready = True
            assert w.proc is not None
            log.info("worker %d ready (pid %d)", w.index, w.proc.pid)
            if all(x.ready for x in self._workers):
                log.info(
                    "serving nba.v1.Decisioning on %s:%d with %d workers",
                    self.settings.host, self.port, self.n,
                )
        if not data:  # EOF: the worker closed or died; _reap decides which
            self._close_ready_fd(w)

    def _close_ready_fd(self, w: _Worker) -> None:
        if w.ready_fd is not None:
            self._sel.unregister(w.ready_fd)
            os.close(w.ready_fd)
            w.ready_fd = None

    def _reap(self) -> None:
        for w in self._workers:
            if w.proc is None or w.proc.poll() is None:
                continue
            code = w.proc.returncode
            self._close_ready_fd(w)
            up = time.monotonic() - w.started_at
            w.proc = None
            if self._stopping:
                continue
            if up >= STABLE_AFTER_S:
                w.failures = 0
            w.failures += 1
            if w.ready:
                w.early_failures = 0
            else:
                w.early_failures += 1
                if w.early_failures >= MAX_EARLY_FAILURES:
                    log.error(
                        "worker %d died %d times before serving (last exit code %s); giving up",
                        w.index, w.early_failures, code,
                    )
                    self._exit_code = 1
                    self._stopping = True
                    return
            delay = RESTART_BACKOFF_S[min(w.failures, len(RESTART_BACKOFF_S)) - 1]
            w.restart_at = time.monotonic() + delay
            log.warning(
                "worker %d exited with code %s after %.1fs; restarting in %.1fs",
                w.index, code, up, delay,
            )

    def _next_restart_in(self) -> float | None:
        due = [w.restart_at for w in self._workers if w.restart_at is not None]
        return None if not due else max(0.0, min(due) - time.monotonic())

    def _restart_due(self) -> None:
        now = time.monotonic()
        for w in self._workers:
            if w.restart_at is not None and w.restart_at <= now and not self._stopping:
                self._spawn(w)

    def _shutdown(self) -> None:
        self._stopping = True
        running = [w.proc for w in self._workers if w.proc is not None and w.proc.poll() is None]
        for p in running:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.shutdown_grace_s + KILL_AFTER_S
        for p in running:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker pid %d did not stop in time; killing it", p.pid)
                p.kill()
                p.wait()
        for w in self._workers:
            self._close_ready_fd(w)
            w.proc = None
        if self._embedded is not None:
            self._embedded.stop()  # type: ignore[attr-defined]
            self._embedded = None
        for sock in (self._reservation, self._http_reservation):
            if sock is not None:
                sock.close()
        self._reservation = self._http_reservation = None
        log.info("all workers stopped")


# ---------------------------------------------------------------------- worker process
async def _serve(settings: Settings, index: int, ready_fd: int) -> None:
    import asyncio

    from nba_service.runtime import Runtime
    from nba_service.server import NbaServer

    server = NbaServer(settings, Runtime(settings))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await server.start()
    if not server.runtime.ready():
        log.warning("worker %d not ready (health NOT_SERVING): %s", index,
                    server.runtime.details())
    try:
        os.write(ready_fd, b"ready\n")
    finally:
        os.close(ready_fd)
    await stop.wait()
    await server.stop()


def worker_main(argv: list[str] | None = None) -> int:
    """Entry point of one worker process (started by the Supervisor, not by hand)."""
    p = argparse.ArgumentParser(prog="nba-worker")
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--ready-fd", type=int, required=True)
    args = p.parse_args(argv)
    # Ctrl-C reaches the whole process group; the supervisor turns it into an orderly SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for key, value in THREAD_ENV.items():
        os.environ.setdefault(key, value)  # before the first import of numpy/numba/lightgbm

    import asyncio

    from nba_service.settings import Settings

    settings = Settings.model_validate_json(sys.stdin.buffer.read())
    logging.basicConfig(
        level=settings.log_level.upper(),
        format=f"%(asctime)s %(levelname)s [worker {args.index} pid %(process)d] "
        "%(name)s: %(message)s",
    )
    asyncio.run(_serve(settings, args.index, args.ready_fd))
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())
