"""Contact policies: the real admission Lua script against a pure-Python model, step by step.

The state machine drives the real outcome script (real valkey-server) with a controllable
clock and checks every step, and every decision's verdict, against a model written straight
from docs/contact-policies.md: full event log, no pruning, no code shared with the service.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from features.schema import FeatureSchema
from nba_service.engine.catalog import Catalog, parse_catalog
from nba_service.engine.policies import DAY_MS, HOUR_MS, PolicyTable, VerdictCode, contact_verdict
from nba_service.store.keys import history_key
from nba_service.store.outcomes import RECORD_OUTCOME_LUA, OutcomeStatus, OutcomeWriter
from nba_service.store.policies import parse_history
from tests.unit.test_policies import policy_doc

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000
CHANNELS = ("WEB", "EMAIL")


@pytest.fixture(scope="module")
def catalog(demo_schema: FeatureSchema) -> Catalog:
    return parse_catalog(policy_doc(), demo_schema)


# ---------------------------------------------------------------- the reference model
@dataclass
class Model:
    """The documented semantics, computed from the full event log of one customer."""

    catalog: Catalog
    impressions: list[tuple[int, str, str]] = field(default_factory=list)  # (t, action, ch)
    rejects: dict[str, list[int]] = field(default_factory=dict)
    accepts: dict[str, list[int]] = field(default_factory=dict)

    def verdict(self, action_id: str, channel: str, now: int) -> VerdictCode | None:
        a = self.catalog.actions[self.catalog.index_of(action_id)]
        p = a.contact_policy
        mine = [t for t, x, _ in self.impressions if x == action_id]
        if p is not None:
            if p.stop_after_accept and self.accepts.get(action_id):
                return VerdictCode.ACCEPTED
            if p.suppress_after_reject_s is not None and any(
                    now - p.suppress_after_reject_s * 1000 < r
                    for r in self.rejects.get(action_id, ())):
                return VerdictCode.REJECTED
            if p.window_s is not None:
                lo = now - p.window_s * 1000
                if p.max_impressions is not None and \
                        sum(t > lo for t in mine) >= p.max_impressions:
                    return VerdictCode.MAX_IMPRESSIONS
                on_ch = [t for t, x, c in self.impressions if x == action_id and c == channel]
                if p.max_impressions_per_channel is not None and \
                        sum(t > lo for t in on_ch) >= p.max_impressions_per_channel:
                    return VerdictCode.MAX_IMPRESSIONS_CHANNEL
            if p.cooldown_s is not None and any(t > now - p.cooldown_s * 1000 for t in mine):
                return VerdictCode.COOLDOWN
        limits = self.catalog.channel_limits.get(channel)
        if limits is not None and not a.fallback:
            contacts = [t for t, x, c in self.impressions if c == channel
                        and not self.catalog.actions[self.catalog.index_of(x)].fallback]
            if limits.max_contacts_per_day is not None and \
                    sum(t > now - DAY_MS for t in contacts) >= limits.max_contacts_per_day:
                return VerdictCode.CHANNEL_MAX_CONTACTS
            if limits.cooldown_s is not None and \
                    any(t > now - limits.cooldown_s * 1000 for t in contacts):
                return VerdictCode.CHANNEL_COOLDOWN
        return None


# Every duration of the test catalog: windows, suppression, cooldowns, the 24 h contact day.
DURATIONS = (HOUR_MS, DAY_MS, 7 * DAY_MS, 30 * DAY_MS)
# Steps that land exactly on the windows' edges as well as inside them.
STEPS = st.sampled_from([0, 0, 0, 1, 60_000, HOUR_MS - 1, HOUR_MS, 6 * HOUR_MS, DAY_MS - 1, DAY_MS,
                         3 * DAY_MS, 7 * DAY_MS, 30 * DAY_MS])


def test_stateful_policies_match_the_model(catalog: Catalog, redis_sync: redis.Redis) -> None:
    script = redis_sync.register_script(RECORD_OUTCOME_LUA)
    table = PolicyTable(catalog)
    writer = OutcomeWriter(redis_sync)  # only for script_call/decode: no I/O of its own here
    ids = [a.id for a in catalog.actions]
    events = itertools.count()

    class Machine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.customer = f"sm-{next(events)}"
            self.now = T0
            self.model = Model(catalog)
            self.sent: list[tuple[str, str, str]] = []  # (event_id, action, outcome)
            self.times: set[int] = set()

        def _send(self, action: str, outcome: str, channel: str, event_id: str | None = None
                  ) -> OutcomeStatus:
            event_id = event_id or f"e{next(events)}"
            keys, args = writer.script_call(
                self.customer, action, outcome, event_id, self.now, 0.0, channel=channel,
                params=table.admission(catalog.index_of(action), channel))
            result = OutcomeWriter.decode(script(keys=keys, args=args))
            if result.status is OutcomeStatus.APPLIED:
                self.sent.append((event_id, action, outcome))
                self.times.add(self.now)
            if result.status is OutcomeStatus.REFUSED:
                assert result.verdict is not None
                self.last_refusal = result.verdict.code
            return result.status

        @rule(action=st.sampled_from(ids), channel=st.sampled_from(CHANNELS), dt=STEPS)
        def impression(self, action: str, channel: str, dt: int) -> None:
            self.now += dt
            expected = self.model.verdict(action, channel, self.now)
            if catalog.actions[catalog.index_of(action)].fallback:
                expected = None  # fallbacks are recorded, never refused
            status = self._send(action, "impression", channel)
            if expected is None:
                assert status is OutcomeStatus.APPLIED
                self.model.impressions.append((self.now, action, channel))
            else:
                assert status is OutcomeStatus.REFUSED and self.last_refusal is expected

        @rule(action=st.sampled_from(ids), channel=st.sampled_from(CHANNELS), dt=STEPS,
              outcome=st.sampled_from(["reject", "accept", "click"]))
        def response(self, action: str, channel: str, dt: int, outcome: str) -> None:
            self.now += dt
            assert self._send(action, outcome, channel) is OutcomeStatus.APPLIED
            if outcome == "reject":
                self.model.rejects.setdefault(action, []).append(self.now)
            elif outcome == "accept":
                self.model.accepts.setdefault(action, []).append(self.now)

        @rule(data=st.data())
        def jump_to_an_edge(self, data: st.DataObject) -> None:
            # Land on (or 1 ms before) the moment some window, suppression or cooldown ends.
            edges = sorted({t + d for t in self.times for d in DURATIONS if t + d > self.now})
            if edges:
                self.now = max(self.now, data.draw(st.sampled_from(edges))
                               - data.draw(st.sampled_from([0, 1])))

        @rule(data=st.data())
        def replay(self, data: st.DataObject) -> None:
            if not self.sent:
                return
            event_id, action, outcome = data.draw(st.sampled_from(self.sent))
            assert self._send(action, outcome, "WEB", event_id) is OutcomeStatus.DUPLICATE

        @invariant()
        def decisions_agree_with_the_model(self) -> None:
            history = parse_history(redis_sync.hgetall(history_key(self.customer)))
            cands = np.arange(len(catalog), dtype=np.int64)
            for ch in CHANNELS:
                out = table.evaluate(cands, ch, history, {}, self.now)
                for i, a in enumerate(catalog.actions):
                    expected = self.model.verdict(a.id, ch, self.now)
                    got = contact_verdict(a.contact_policy, catalog.channel_limits.get(ch),
                                          a.fallback, history.of(a.id),
                                          history.contacts.get(ch, ()), ch, self.now)
                    assert (got and got.code) == expected, (a.id, ch)
                    # No budget counters given: only contact policies can block here.
                    assert bool(out.block[i]) == (expected is not None)

        @invariant()
        def history_stays_bounded(self) -> None:
            raw = redis_sync.hgetall(history_key(self.customer))
            for key, value in raw.items():
                if key.startswith(b"#i|") or key.startswith(b"#k|"):
                    assert value.count(b",") < 3  # keep <= max(cap, 1) <= 3 timestamps

    run_state_machine_as_test(Machine, settings=settings(
        max_examples=100, stateful_step_count=30, deadline=None,
        suppress_health_check=[HealthCheck.too_slow]))
