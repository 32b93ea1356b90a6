"""The closed loop against a live service: decide -> outcomes -> export -> train -> publish.

Each round, simulated customers visit (`Simulator.visits`); their session features reach the
service through `IngestEvents`, the service decides over real gRPC (`Decide`, one action,
exploring as its catalog says), the simulator draws the response to the served action
(`Simulator.respond`, with fatigue on repeats), and the outcome goes back through
`RecordOutcome` (an IMPRESSION, plus an ACCEPT when accepted). Then the decision and outcome
logs are exported with the `nba logs export` code path, a model is trained on the exported
point-in-time rows, published into the registry the service watches, and the loop waits
until the service answers with the new `model_version`.

Every round also measures, on a fixed set of evaluation visits (customers that never get
outcomes, so contact history cannot move them, and whose logged decisions are left out of
training), the exact expected value per decision of:

    random         uniform over the channel's actions (the simulator's `random_policy`)
    current        the service as it serves now (real `Decide` calls, exploration included)
    oracle         the best true P x V among the channel's actions (`oracle_policy`)
    oracle_rules   the best true P x V among the actions the catalog's rules allow
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from features.encoding import RowEncoder, encode_batch_values, encode_realtime_values
from features.schema import DType, FeatureSchema, Source
from nba_service.engine.arbitration import Engine
from nba_service.engine.catalog import Catalog
from training.dataset import Dataset, simulate_impressions
from training.ground_truth import Table
from training.logs_dataset import concat_datasets, load_logs
from training.simulate import Simulator, oracle_policy, random_policy
from training.train import train_propensity_model

__all__ = ["ClosedLoop", "LoopConfig", "RoundResult"]

logger = logging.getLogger("nba.training")


@dataclass
class LoopConfig:
    channels: tuple[str, ...] = ("WEB", "CALL_CENTRE")
    customers: int = 3000  # customers who visit during the rounds
    eval_customers: int = 1000  # fixed evaluation visits
    visits_per_round: int = 3000
    rounds: int = 5
    pilot_customers: int = 100  # random-logged history the first model is trained on
    seed: int = 7
    concurrency: int = 16
    num_boost_round: int = 200
    params: dict[str, Any] = field(default_factory=lambda: {
        "learning_rate": 0.1, "num_leaves": 15, "min_data_in_leaf": 20})
    swap_timeout_s: float = 60.0
    objective: str = "accept"  # "accept" (every acceptance worth 1) or "value" (catalog values)


@dataclass
class RoundResult:
    round: int
    model_version: str
    train_rows: int
    positives: int
    random: float
    current: float
    oracle: float
    oracle_rules: float
    served_accept_rate: float
    seconds: float

    @property
    def share_of_oracle(self) -> float:
        return self.current / self.oracle if self.oracle else 0.0

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "share_of_oracle": self.share_of_oracle}


def _py(v: object) -> object:
    if isinstance(v, float | np.floating):
        return None if v != v else float(v)
    if isinstance(v, np.integer):
        return int(v)
    return v


_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


async def _retry(call: Any, request: Any, attempts: int = 5) -> Any:
    """A well-behaved client: the service answers UNAVAILABLE ("retry") while its store
    breaker is open; back off and try again, a few times."""
    for attempt in range(attempts):
        try:
            return await call(request, timeout=10)
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in _RETRYABLE or attempt == attempts - 1:
                raise
            await asyncio.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


class ClosedLoop:
    """Drives one live service. `stub`/`admin` are async gRPC stubs; `redis` a sync client
    of the service's store (for the export); `registry` the directory the service watches."""

    def __init__(
        self, cfg: LoopConfig, schema: FeatureSchema, catalog: Catalog, sim: Simulator,
        stub: Any, admin: Any, redis: Any, registry: Path, workdir: Path,
    ) -> None:
        self.cfg, self.schema, self.catalog, self.sim = cfg, schema, catalog, sim
        self.stub, self.admin, self.redis = stub, admin, redis
        self.registry, self.workdir = Path(registry), Path(workdir)
        self.export_dir = self.workdir / "export"
        self.rng = np.random.default_rng([cfg.seed, 101])
        self.population = sim.population(cfg.customers)
        self.eval_pop = sim.population(cfg.eval_customers, start=cfg.customers)
        self.eval_ids = set(self.eval_pop["customer_id"].tolist())
        n_actions = len(sim.actions)
        self.seen = np.zeros((cfg.customers, n_actions), dtype=np.int32)
        self.index = {a.id: i for i, a in enumerate(catalog.actions)}
        self.sim_index = {a: i for i, a in enumerate(sim.action_ids)}
        chan = np.asarray(cfg.channels, dtype=object)[
            self.rng.integers(0, len(cfg.channels), cfg.eval_customers)]
        self.eval_visits = sim.visits(self.eval_pop, chan, seed=cfg.seed * 31 + 7)
        self.pilot: Dataset | None = None
        self.results: list[RoundResult] = []

    # ------------------------------------------------------------------ gRPC traffic
    def _requests(self, visits: Table, rows: np.ndarray) -> list[tuple[Any, Any]]:
        from nba_service._proto.nba.v1 import decisioning_pb2 as pb
        from nba_service.client import build_request, to_value

        out = []
        records = visits.take(rows).to_dicts(self.schema)
        realtime = self.schema.of(Source.REALTIME)
        for rec in records:
            cid = str(rec["customer_id"])
            events = []
            for spec in realtime:
                v = _py(rec.get(spec.name))
                if v is None:
                    continue
                v = int(v) if spec.dtype is DType.INT else v  # type: ignore[call-overload]
                events.append(pb.Event(feature=spec.name, value=to_value(v), op=pb.Event.SET))
            context = {k: _py(rec[k]) for k in ("hour_of_day", "page_type")
                       if _py(rec.get(k)) is not None}
            if "hour_of_day" in context:
                context["hour_of_day"] = int(context["hour_of_day"])  # type: ignore[call-overload]
            out.append((pb.IngestEventsRequest(customer_id=cid, events=events),
                        build_request(cid, str(rec["channel"]), context=context, limit=1)))
        return out

    async def _decide_all(self, visits: Table, rows: np.ndarray) -> list[Any]:
        reqs = self._requests(visits, rows)
        sem = asyncio.Semaphore(self.cfg.concurrency)

        async def one(ingest: Any, decide: Any) -> Any:
            async with sem:
                await _retry(self.stub.IngestEvents, ingest)
                return await _retry(self.stub.Decide, decide)

        return list(await asyncio.gather(*(one(i, d) for i, d in reqs)))

    def _served(self, responses: Sequence[Any]) -> np.ndarray:
        """Simulator action index served per response (-1 when nothing was served)."""
        return np.array([self.sim_index[r.recommendations[0].action_id]
                         if r.recommendations else -1 for r in responses], dtype=np.intp)

    # ------------------------------------------------------------------ evaluation
    def _value_of(self, visits: Table, served: np.ndarray) -> float:
        chan = visits["channel"]
        ev = self.sim.true_propensity_matrix(visits, channel=chan) * self.sim.value_matrix(visits)
        rows = np.arange(len(visits))
        return float(np.where(served >= 0, ev[rows, np.maximum(served, 0)], 0.0).mean())

    def baselines(self) -> dict[str, float]:
        """random / oracle / oracle-under-the-rules values on the evaluation visits."""
        v = self.eval_visits
        out = {"random": 0.0, "oracle": 0.0, "oracle_rules": 0.0}
        engine = Engine(self.catalog, self.schema)
        encoder = RowEncoder(self.schema, [a.attributes() for a in self.catalog.actions])
        for c in self.cfg.channels:
            rows = np.flatnonzero(v["channel"] == c)
            part = v.take(rows)
            w = len(rows) / len(v)
            out["random"] += w * self.sim.policy_value(random_policy, part, c)
            out["oracle"] += w * self.sim.policy_value(oracle_policy, part, c)
            p_true = self.sim.true_propensity_matrix(part, channel=c)
            ev = p_true * self.sim.value_matrix(part)
            cands = engine.candidates_for(c)
            best = np.zeros(len(rows))
            for k, rec in enumerate(part.to_dicts(self.schema)):
                row = encoder.customer_row(encode_batch_values(self.schema, rec),
                                           encode_realtime_values(self.schema, rec), rec)
                r = engine.rank(row, cands, p_true[k, cands], c, rec, len(cands))
                ok = cands[np.isin(r.removed_stage, (0, 12, 13))]
                best[k] = ev[k, ok].max() if len(ok) else 0.0
            out["oracle_rules"] += w * float(best.mean())
        return out

    async def current_value(self) -> tuple[float, str]:
        responses = await self._decide_all(self.eval_visits, np.arange(len(self.eval_visits)))
        versions = {r.model_version for r in responses}
        return self._value_of(self.eval_visits, self._served(responses)), ",".join(
            sorted(versions))

    # ------------------------------------------------------------------ one round of traffic
    async def traffic(self, round_no: int) -> tuple[int, int]:
        from nba_service._proto.nba.v1 import decisioning_pb2 as pb

        n = self.cfg.visits_per_round
        # Each customer at most once a round (while the population allows): a second visit
        # before the first one's impression is recorded would race the contact policies.
        who = self.rng.choice(self.cfg.customers, n, replace=n > self.cfg.customers)
        chan = np.asarray(self.cfg.channels, dtype=object)[
            self.rng.integers(0, len(self.cfg.channels), n)]
        visits = self.sim.visits(self.population.take(who), chan,
                                 seed=self.cfg.seed * 1000 + round_no)
        responses = await self._decide_all(visits, np.arange(n))
        served = self._served(responses)
        recent = np.where(served >= 0, self.seen[who, np.maximum(served, 0)], 0)
        y = self.sim.respond(visits, np.maximum(served, 0), recent_impressions=recent,
                             rng=self.rng)
        sem = asyncio.Semaphore(self.cfg.concurrency)

        async def record(i: int) -> bool:
            r = responses[i]
            cid = str(visits["customer_id"][i])
            kinds = [pb.IMPRESSION] + ([pb.ACCEPT] if y[i] else [])
            async with sem:
                for kind in kinds:
                    try:
                        # One event_id per outcome: a retried call is applied at most once.
                        await _retry(self.stub.RecordOutcome, pb.RecordOutcomeRequest(
                            decision_id=r.decision_id, action_id=r.recommendations[0].action_id,
                            customer_id=cid, outcome=kind, event_id=uuid.uuid4().hex,
                            channel=str(visits["channel"][i])))
                    except grpc.aio.AioRpcError as exc:
                        # A contact policy or budget refused the impression at show time: the
                        # customer never saw the action, so there is no response either.
                        if exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED:
                            return False
                        raise
            return True

        candidates = np.flatnonzero(served >= 0)
        admitted = await asyncio.gather(*(record(int(i)) for i in candidates))
        shown = candidates[np.asarray(admitted, dtype=bool)]
        np.add.at(self.seen, (who[shown], served[shown]), 1)
        return len(shown), int(y[shown].sum())

    # ------------------------------------------------------------------ export, train, publish
    def _wait_logged(self, expected: int, timeout_s: float = 30.0) -> None:
        from nba_service.store.decision_log import DECISIONS_STREAM

        deadline = time.monotonic() + timeout_s
        while int(self.redis.xlen(DECISIONS_STREAM)) < expected:
            if time.monotonic() > deadline:
                raise TimeoutError(f"decision log has {self.redis.xlen(DECISIONS_STREAM)} "
                                   f"entries, expected {expected}")
            time.sleep(0.05)

    def export(self, now_ms: int) -> None:
        from nba_service.logs.export import Exporter

        Exporter(self.redis, self.export_dir, self.schema, self.catalog, group="loop",
                 settle_s=0.0, progress=False).run(now_ms=now_ms)

    def training_set(self) -> Dataset:
        logs = load_logs(self.export_dir, self.schema).dataset
        keep = np.array([c not in self.eval_ids for c in logs.customer_id.astype(str)])
        parts = [logs.subset(np.flatnonzero(keep))]
        if self.pilot is not None:
            parts.append(self.pilot)
        return concat_datasets(parts)

    def train_and_publish(self, data: Dataset, name: str) -> str:
        from nba_service.scoring.registry import publish
        from training.export import export_artifact, golden_inputs

        cfg = self.cfg
        result = train_propensity_model(
            data, self.schema, params=cfg.params, seed=cfg.seed,
            num_boost_round=cfg.num_boost_round, early_stopping_rounds=20, log_every=0)
        out = self.workdir / "artifacts" / name
        export_artifact(result.booster, self.schema, out, name="loop",
                        golden_x=golden_inputs(self.schema, data.x, 32, cfg.seed),
                        metrics=result.metrics, training_window=data.window,
                        extra={"loop_round": name}, overwrite=True)
        return publish(out, self.registry, self.schema)

    async def wait_for_version(self, version: str) -> None:
        from nba_service._proto.nba.v1 import decisioning_pb2 as pb

        deadline = time.monotonic() + self.cfg.swap_timeout_s
        while True:
            status = await self.admin.GetStatus(pb.GetStatusRequest(), timeout=5)
            if status.model_version == version:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"service still serves {status.model_version!r}, "
                                   f"published {version!r}")
            await asyncio.sleep(0.05)

    # ------------------------------------------------------------------ the loop
    def pilot_model(self) -> str:
        """The first model: trained on a small random-logged history (no service yet)."""
        self.pilot = simulate_impressions(self.sim, self.cfg.pilot_customers, 1,
                                          list(self.cfg.channels), seed=self.cfg.seed,
                                          start=None)
        self.pilot.customer_id = np.array([f"pilot-{c}" for c in self.pilot.customer_id],
                                          dtype=object)
        return self.train_and_publish(self.pilot, "round-0")

    async def run(self, on_round: Any = None) -> list[RoundResult]:
        base = self.baselines()
        decisions = 0
        version = self.pilot_model()
        await self.wait_for_version(version)
        train_rows = positives = 0
        for r in range(self.cfg.rounds + 1):
            started = time.monotonic()
            value, served_by = await self.current_value()
            decisions += len(self.eval_visits)
            result = RoundResult(round=r, model_version=served_by, train_rows=train_rows,
                                 positives=positives, current=value, seconds=0.0,
                                 served_accept_rate=0.0, **base)
            if r == self.cfg.rounds:
                self.results.append(result)
                if on_round:
                    on_round(result)
                break
            shown, accepted = await self.traffic(r)
            decisions += self.cfg.visits_per_round
            result.served_accept_rate = accepted / shown if shown else 0.0
            self._wait_logged(decisions)
            self.export(now_ms=int(time.time() * 1000) + 30 * 86_400_000)
            data = self.training_set()
            train_rows, positives = len(data), int(data.y.sum())
            version = self.train_and_publish(data, f"round-{r + 1}")
            await self.wait_for_version(version)
            result.seconds = time.monotonic() - started
            self.results.append(result)
            if on_round:
                on_round(result)
        return self.results
