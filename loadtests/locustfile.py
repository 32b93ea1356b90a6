"""Locust load test of the gRPC API: Decide and RecordOutcome, Zipf-skewed customers, all channels.

    # a seeded service (customers C0000000 ... C0009999), left running:
    .venv/bin/nba demo --customers 10000 --keep-serving --port 50051 &
    # 50 users for 60 s, headless, CSV stats next to it:
    .venv/bin/locust -f loadtests/locustfile.py --headless -u 50 -r 10 --run-time 60s \
        --host 127.0.0.1:50051 --customers 10000 --csv /tmp/nba-locust

Customer ids are `<prefix><index:07d>` (the simulator's ids); index k is drawn with probability
proportional to 1 / k^s (Zipf, s = --zipf-s), so a few customers are hot and most are cold, as
on a real site. A user decides, and then reports an outcome for one served action with
probability --outcome-ratio (IMPRESSION, then sometimes CLICK / ACCEPT / REJECT), each with a
fresh event id, as a desktop or app would.

Locust is for soak and mixed-traffic runs; latency percentiles against the machine's floor come
from loadtests/bench.py (locust's own generator is one gevent process and saturates first).
"""

from __future__ import annotations

import bisect
import itertools
import random
import time
import uuid
from typing import Any

import grpc
import grpc.experimental.gevent as grpc_gevent
from locust import User, events, task
from locust.exception import StopUser

grpc_gevent.init_gevent()  # gRPC's I/O must cooperate with gevent before any channel exists

from nba_service._proto.nba.v1 import decisioning_pb2 as pb  # noqa: E402
from nba_service._proto.nba.v1 import decisioning_pb2_grpc as rpc  # noqa: E402

CHANNELS = [v for k, v in pb.Channel.items() if v != pb.CHANNEL_UNSPECIFIED]
CONTEXTS: dict[int, dict[str, pb.Value]] = {
    pb.WEB: {"page_type": pb.Value(string_value="product")},
    pb.MOBILE_APP: {"page_type": pb.Value(string_value="account")},
}
FOLLOW_UPS = [(pb.CLICK, 0.3), (pb.ACCEPT, 0.1), (pb.REJECT, 0.2)]


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--customers", type=int, default=10_000, help="customer ids in the store")
    parser.add_argument("--customer-prefix", default="C", help="customer id prefix")
    parser.add_argument("--zipf-s", type=float, default=1.1, help="Zipf exponent of customer ids")
    parser.add_argument("--outcome-ratio", type=float, default=0.3,
                        help="share of decisions followed by outcomes")
    parser.add_argument("--deadline", type=float, default=2.0, help="per-call deadline (s)")


class ZipfIds:
    """Draws `prefix + index` with P(index k) proportional to 1/(k+1)^s; O(log n) per draw."""

    def __init__(self, n: int, s: float, prefix: str, rng: random.Random) -> None:
        if n < 1:
            raise ValueError("need at least one customer")
        self.cum = list(itertools.accumulate(1.0 / (k + 1) ** s for k in range(n)))
        self.prefix = prefix
        self.rng = rng

    def index(self) -> int:
        return bisect.bisect_left(self.cum, self.rng.random() * self.cum[-1])

    def __call__(self) -> str:
        return f"{self.prefix}{self.index():07d}"


class NbaUser(User):
    """One client desktop/app: sync gRPC under gevent, every call reported to locust."""

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        opts = environment.parsed_options
        if not self.host:
            raise StopUser("set --host HOST:PORT (the gRPC target, no scheme)")
        self.rng = random.Random()
        self.ids = ZipfIds(opts.customers, opts.zipf_s, opts.customer_prefix, self.rng)
        self.outcome_ratio = opts.outcome_ratio
        self.deadline = opts.deadline
        self.channel = grpc.insecure_channel(self.host)
        self.decisioning = rpc.DecisioningStub(self.channel)

    def on_stop(self) -> None:
        self.channel.close()

    def _call(self, name: str, method: Any, request: Any) -> Any:
        t0 = time.perf_counter()
        exc: Exception | None = None
        resp = None
        try:
            resp = method(request, timeout=self.deadline)
        except grpc.RpcError as e:
            exc = e
        self.environment.events.request.fire(
            request_type="grpc", name=name, response_time=(time.perf_counter() - t0) * 1000,
            response_length=resp.ByteSize() if resp is not None else 0, exception=exc,
            context={},
        )
        return resp

    @task
    def decide_then_outcome(self) -> None:
        customer = self.ids()
        channel = self.rng.choice(CHANNELS)
        req = pb.DecideRequest(customer_id=customer, channel=channel,  # type: ignore[arg-type]
                               context=CONTEXTS.get(channel, {}), limit=3)
        resp = self._call("Decide", self.decisioning.Decide, req)
        if resp is None or not resp.recommendations or self.rng.random() >= self.outcome_ratio:
            return
        rec = self.rng.choice(list(resp.recommendations))
        outcomes = [pb.IMPRESSION] + [o for o, p in FOLLOW_UPS if self.rng.random() < p][:1]
        for outcome in outcomes:
            self._call("RecordOutcome", self.decisioning.RecordOutcome, pb.RecordOutcomeRequest(
                decision_id=resp.decision_id, action_id=rec.action_id, customer_id=customer,
                outcome=outcome, event_id=uuid.uuid4().hex, channel=channel,  # type: ignore[arg-type]
                value=25.0 if outcome == pb.ACCEPT else 0.0,
            ))
