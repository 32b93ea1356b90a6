"""The load generator: P client processes, each with its own event loop and grpc.aio channels.

One Python process cannot generate more load than one core can push through grpc.aio, so the
generator is several processes; the orchestrator (bench.py) hands every process the same
phase spec with a common wall-clock start time and merges their samples.

Phases:
  closed  fixed concurrency: each slot sends, waits for the answer, sends again
  open    fixed arrival rate: sends are scheduled at t0 + k/rate whatever the answers do, and
          latency is measured from the *scheduled* time, so queueing (and a lagging generator)
          shows in the numbers instead of silently lowering the offered load
  redis   bare GET of a customer's packed vector (the floor's store part)
  score   the service's scorer alone on the same N-candidate matrices (the floor's model part)
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import random
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

# Client processes must not fan out native thread pools either: they share the cores with
# the server under test.
for _k in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_k, "1")

CONTEXT = {"page_type": "product", "hour_of_day": 14}
MAX_IN_FLIGHT = 4096  # open loop: beyond this, sends are dropped and counted, not queued
STAGES = ("total", "store", "encode", "score", "rules", "serialize")


@dataclass
class Spec:
    kind: str  # closed | open | redis | score
    rpc: str = "decide"  # decide | echo (closed/open)
    concurrency: int = 1  # this process's share
    rate: float = 0.0  # this process's share (open), requests per second
    offset_s: float = 0.0  # open: this process's phase shift inside the common schedule
    start_at: float = 0.0  # wall clock (time.time()) when sending starts
    warmup_s: float = 1.0
    duration_s: float = 5.0
    channel: str = "WEB"
    candidates: int = 0  # score phase
    model: str = ""  # score phase
    catalog: str = ""  # score phase
    schema: str = ""  # score phase
    backend: str = "auto"  # score phase: the backend the server reports it serves with


@dataclass
class Result:
    latencies_ns: array = field(default_factory=lambda: array("q"))
    send_lag_ns: array = field(default_factory=lambda: array("q"))
    stages: dict[str, array] = field(default_factory=lambda: {s: array("q") for s in STAGES})
    errors: dict[str, int] = field(default_factory=dict)
    dropped: int = 0
    measured_s: float = 0.0
    cpu_s: float = 0.0
    pid: int = 0
    info: dict[str, Any] = field(default_factory=dict)


class Client:
    """State one client process keeps across phases: channels, stubs, prebuilt requests."""

    def __init__(self, target: str, redis_url: str, customer_ids: list[str], workers: int,
                 conns_per_worker: int, seed: int) -> None:
        self.target = target
        self.redis_url = redis_url
        self.customer_ids = customer_ids
        self.workers = workers
        self.conns_per_worker = conns_per_worker
        self.rng = random.Random(seed)
        self.channels: list[Any] = []
        self.decide: list[Any] = []
        self.echo: list[Any] = []
        self.requests: dict[str, list[Any]] = {}
        self.worker_pids: list[str] = []
        self.server_details: dict[str, str] = {}

    async def connect(self) -> None:
        """Open connections until every server worker has `conns_per_worker` of them.

        SO_REUSEPORT hashes each new connection to a worker; with a handful of connections
        that hash can leave one worker idle, which would measure luck instead of the server.
        A local subchannel pool per channel forces one TCP connection per channel."""
        import grpc

        from nba_service._proto.nba.v1 import decisioning_pb2 as pb
        from nba_service._proto.nba.v1 import decisioning_pb2_grpc as rpc

        by_pid: dict[str, list[Any]] = {}
        spare: list[Any] = []
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and (
            len(by_pid) < self.workers
            or any(len(v) < self.conns_per_worker for v in by_pid.values())
        ):
            ch = grpc.aio.insecure_channel(
                self.target, options=[("grpc.use_local_subchannel_pool", 1)]
            )
            status = await rpc.AdminStub(ch).GetStatus(pb.GetStatusRequest(), timeout=10.0)
            pid = status.details.get("worker_pid", "?")
            self.server_details = dict(status.details)
            if len(by_pid.setdefault(pid, [])) < self.conns_per_worker:
                by_pid[pid].append(ch)
            else:
                spare.append(ch)
        for ch in spare:
            await ch.close()
        if len(by_pid) < self.workers:
            raise RuntimeError(f"reached {len(by_pid)} of {self.workers} server workers")
        # Interleave so that consecutive slots land on different workers.
        groups = list(by_pid.values())
        self.channels = [g[i] for i in range(self.conns_per_worker) for g in groups]
        self.decide = [rpc.DecisioningStub(ch).Decide for ch in self.channels]
        self.echo = [rpc.AdminStub(ch).Echo for ch in self.channels]
        self.worker_pids = sorted(by_pid)

    def _requests(self, channel: str) -> list[Any]:
        if channel not in self.requests:
            from nba_service._proto.nba.v1 import decisioning_pb2 as pb
            from nba_service.client import build_request

            # Prebuilt: the generator's per-request work is picking one, not building it.
            ids = [self.rng.choice(self.customer_ids) for _ in range(2048)]
            reqs: list[Any] = [build_request(c, channel, "", CONTEXT, limit=3) for c in ids]
            self.requests[channel] = reqs
            self.requests["echo"] = [pb.EchoRequest(payload=b"x" * 64)]
        return self.requests[channel]

    async def run(self, spec: Spec) -> Result:
        if spec.kind == "closed":
            return await self._closed(spec)
        if spec.kind == "open":
            return await self._open(spec)
        if spec.kind == "redis":
            return await self._redis(spec)
        if spec.kind == "score":
            return await asyncio.to_thread(_score, spec)
        raise ValueError(f"unknown phase kind {spec.kind!r}")

    def _call(self, spec: Spec, i: int) -> tuple[Any, Any]:
        if spec.rpc == "echo":
            self._requests(spec.channel)
            return self.echo[i % len(self.echo)], self.requests["echo"][0]
        reqs = self._requests(spec.channel)
        return self.decide[i % len(self.decide)], reqs[i % len(reqs)]

    async def _wait_until(self, wall: float) -> None:
        delay = wall - time.time()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _closed(self, spec: Spec) -> Result:
        import grpc

        res = Result(pid=os.getpid())
        self._requests(spec.channel)
        await self._wait_until(spec.start_at)
        t_start = time.perf_counter_ns()
        m_start = t_start + int(spec.warmup_s * 1e9)
        m_end = m_start + int(spec.duration_s * 1e9)
        decide = spec.rpc == "decide"

        async def slot(k: int) -> None:
            i = k
            while True:
                call, req = self._call(spec, i)
                i += spec.concurrency
                t0 = time.perf_counter_ns()
                if t0 >= m_end:
                    return
                try:
                    resp = await call(req, timeout=10.0)
                except grpc.aio.AioRpcError as exc:
                    if t0 >= m_start:
                        name = exc.code().name
                        res.errors[name] = res.errors.get(name, 0) + 1
                    continue
                t1 = time.perf_counter_ns()
                if t0 >= m_start and t1 <= m_end:
                    res.latencies_ns.append(t1 - t0)
                    if decide:
                        _record_timing(res, resp.timing)

        cpu0 = await _cpu_at(m_start)
        tasks = [asyncio.create_task(slot(k)) for k in range(spec.concurrency)]
        cpu1 = await _cpu_at(m_end)
        await asyncio.gather(*tasks)
        res.measured_s = spec.duration_s
        res.cpu_s = cpu1 - cpu0
        return res

    async def _open(self, spec: Spec) -> Result:
        import grpc

        res = Result(pid=os.getpid())
        self._requests(spec.channel)
        decide = spec.rpc == "decide"
        interval_ns = int(1e9 / spec.rate)
        in_flight = 0
        tasks: set[asyncio.Task[None]] = set()
        await self._wait_until(spec.start_at)
        t_start = time.perf_counter_ns() + int(spec.offset_s * 1e9)
        m_start = t_start + int(spec.warmup_s * 1e9)
        m_end = m_start + int(spec.duration_s * 1e9)

        async def one(i: int, scheduled: int) -> None:
            nonlocal in_flight
            call, req = self._call(spec, i)
            sent = time.perf_counter_ns()
            measured = scheduled >= m_start
            if measured:
                res.send_lag_ns.append(sent - scheduled)
            try:
                resp = await call(req, timeout=10.0)
            except grpc.aio.AioRpcError as exc:
                if measured:
                    name = exc.code().name
                    res.errors[name] = res.errors.get(name, 0) + 1
                return
            finally:
                in_flight -= 1
            if measured:
                res.latencies_ns.append(time.perf_counter_ns() - scheduled)
                if decide:
                    _record_timing(res, resp.timing)

        cpu0: float | None = None
        k = 0
        while True:
            scheduled = t_start + k * interval_ns
            if scheduled >= m_end:
                break
            now = time.perf_counter_ns()
            if scheduled > now:
                await asyncio.sleep((scheduled - now) / 1e9)
            if cpu0 is None and scheduled >= m_start:
                cpu0 = time.process_time()
            if in_flight >= MAX_IN_FLIGHT:
                if scheduled >= m_start:
                    res.dropped += 1
            else:
                in_flight += 1
                t = asyncio.create_task(one(k, scheduled))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
            k += 1
        cpu1 = time.process_time()
        if tasks:
            await asyncio.gather(*tasks)
        res.measured_s = spec.duration_s
        res.cpu_s = cpu1 - (cpu0 if cpu0 is not None else cpu1)
        return res

    async def _redis(self, spec: Spec) -> Result:
        """The store floor: the same client library and socket type as the service, one GET
        of a packed vector per request, one request in flight."""
        import redis.asyncio as aioredis

        from nba_service.store.keys import features_key

        res = Result(pid=os.getpid())
        client = aioredis.Redis.from_url(self.redis_url)
        keys = [features_key(self.rng.choice(self.customer_ids)) for _ in range(2048)]
        try:
            await client.get(keys[0])  # connect outside the measurement
            await self._wait_until(spec.start_at)
            m_start = time.perf_counter_ns() + int(spec.warmup_s * 1e9)
            m_end = m_start + int(spec.duration_s * 1e9)
            cpu0 = None
            i = 0
            while True:
                t0 = time.perf_counter_ns()
                if t0 >= m_end:
                    break
                if cpu0 is None and t0 >= m_start:
                    cpu0 = time.process_time()
                blob = await client.get(keys[i % len(keys)])
                t1 = time.perf_counter_ns()
                if blob is None:
                    res.errors["MISSING_KEY"] = res.errors.get("MISSING_KEY", 0) + 1
                elif t0 >= m_start:
                    res.latencies_ns.append(t1 - t0)
                i += 1
            res.cpu_s = time.process_time() - (cpu0 or time.process_time())
        finally:
            await client.aclose()
        res.measured_s = spec.duration_s
        return res


def _record_timing(res: Result, t: Any) -> None:
    s = res.stages
    s["total"].append(t.total_us)
    s["store"].append(t.store_us)
    s["encode"].append(t.encode_us)
    s["score"].append(t.score_us)
    s["rules"].append(t.rules_us)
    s["serialize"].append(t.serialize_us)


async def _cpu_at(perf_ns: int) -> float:
    delay = (perf_ns - time.perf_counter_ns()) / 1e9
    if delay > 0:
        await asyncio.sleep(delay)
    return time.process_time()


def _score(spec: Spec) -> Result:
    """The scorer the service loads (same artifact loader and registry), on the matrices the
    service builds (same encoder, same catalog) for real customers, one call per request."""
    import numpy as np

    from features.encoding import RowEncoder
    from features.schema import FeatureSchema
    from nba_service.engine.catalog import load_catalog
    from nba_service.scoring.registry import ModelHolder

    res = Result(pid=os.getpid())
    schema = FeatureSchema.from_yaml(spec.schema)
    catalog = load_catalog(spec.catalog, schema)
    holder = ModelHolder(schema, backend=spec.backend)
    if not holder.try_load(spec.model):
        raise RuntimeError(f"cannot load model: {holder.last_error}")
    model = holder.model
    assert model is not None
    scorer = model.scorer
    enc = RowEncoder(schema, [a.attributes() for a in catalog.actions])
    cands = np.array([i for i, a in enumerate(catalog.actions) if spec.channel in a.channels],
                     dtype=np.int64)[: spec.candidates]
    rng = np.random.default_rng(1)
    mats = []
    golden = np.load(os.path.join(spec.model, "golden.npz"))["x"].astype(np.float32)
    # Golden rows are real training rows: realistic customer columns (the encoder overwrites
    # the action columns per candidate), so trees take realistic paths.
    for idx in rng.integers(0, len(golden), 32):
        mats.append(np.ascontiguousarray(enc.encode(golden[int(idx)].copy(), cands)))
    res.info = {"backend": getattr(scorer, "backend", type(scorer).__name__),
                "rows": int(len(cands))}
    for m in mats[:4]:
        scorer.predict(m)  # first-call costs stay out of the floor
    wait = spec.start_at - time.time()
    if wait > 0:
        time.sleep(wait)  # the common start time of the phase, not a synchronisation
    m_start = time.perf_counter_ns() + int(spec.warmup_s * 1e9)
    m_end = m_start + int(spec.duration_s * 1e9)
    cpu0 = None
    i = 0
    while True:
        t0 = time.perf_counter_ns()
        if t0 >= m_end:
            break
        if cpu0 is None and t0 >= m_start:
            cpu0 = time.process_time()
        scorer.predict(mats[i % len(mats)])
        t1 = time.perf_counter_ns()
        if t0 >= m_start:
            res.latencies_ns.append(t1 - t0)
        i += 1
    res.cpu_s = time.process_time() - (cpu0 or time.process_time())
    res.measured_s = spec.duration_s
    return res


# ---------------------------------------------------------------------- process pool
def _process_main(conn: Any, args: dict[str, Any]) -> None:
    loop = asyncio.new_event_loop()
    client = Client(**args)
    try:
        loop.run_until_complete(client.connect())
        conn.send(("ready", {"pid": os.getpid(), "worker_pids": client.worker_pids,
                             "details": client.server_details}))
        while True:
            msg = conn.recv()
            if msg is None:
                break
            try:
                conn.send(("ok", loop.run_until_complete(client.run(msg))))
            except Exception as exc:  # reported to the orchestrator, which fails the run
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
        for ch in client.channels:
            loop.run_until_complete(ch.close())
    finally:
        loop.close()
        conn.close()


class LoadGenerator:
    """P persistent client processes; `run(specs)` runs one phase (one spec per process) and
    returns their results. Processes are started with `spawn` so each has a fresh gRPC core."""

    def __init__(self, processes: int, target: str, redis_url: str, customer_ids: list[str],
                 workers: int, conns_per_worker: int = 2) -> None:
        ctx = mp.get_context("spawn")
        self.procs: list[Any] = []
        self.conns: list[Any] = []
        for i in range(processes):
            parent, child = ctx.Pipe()
            args = {"target": target, "redis_url": redis_url, "customer_ids": customer_ids,
                    "workers": workers, "conns_per_worker": conns_per_worker, "seed": 1000 + i}
            p = ctx.Process(target=_process_main, args=(child, args), daemon=True)
            p.start()
            self.procs.append(p)
            self.conns.append(parent)
        self.pids: list[int] = []
        self.server_pids: set[str] = set()
        self.server_details: dict[str, str] = {}
        for c in self.conns:
            status, info = c.recv()
            if status != "ready":
                raise RuntimeError(f"client process failed to start: {info}")
            self.pids.append(int(info["pid"]))
            self.server_pids.update(info["worker_pids"])
            self.server_details = info["details"]

    def run(self, specs: list[Spec | None]) -> list[Result]:
        """One spec per process (None leaves that process idle)."""
        busy = [(c, s) for c, s in zip(self.conns, specs, strict=True) if s is not None]
        for c, s in busy:
            c.send(s)
        out: list[Result] = []
        errors: list[str] = []
        for c, _ in busy:
            status, payload = c.recv()
            if status == "ok":
                out.append(payload)
            else:
                errors.append(str(payload))
        if errors:
            raise RuntimeError("load generator failed: " + "; ".join(errors))
        return out

    def close(self) -> None:
        for c in self.conns:
            with contextlib.suppress(BrokenPipeError, OSError):
                c.send(None)
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.terminate()
                p.join(5)
