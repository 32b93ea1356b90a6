"""Proactive chat invites: should this web session see one now, for which queue, and why.

One evaluation: business hours (no I/O) -> ONE pipelined read (the customer's features when
known, the session record and every queue's capacity) -> session gates (invites per session,
decline cooldown, pending invite) -> dwell threshold -> the model scores the chat_invite actions
on the session's features (shared RowEncoder) -> the engine applies their catalog rules with
queues without a free agent blocked as CAPACITY -> the best survivor above `min_score` gets an
invite, whose agent hold is taken atomically by a Lua script that re-checks the session.

Accept / decline come back through RecordOutcome with decision_id = invite_id; `on_outcome`
settles the hold (decline: released + cooldown; accept: the agent stays taken until the next
capacity report). Unanswered invites release their agent when the hold expires.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from features.schema import FeatureSchema, Source
from nba_service.decide import CatalogHolder, CatalogRuntime, new_decision_id
from nba_service.decide_support import STORE_ERRORS
from nba_service.engine.arbitration import Ranking
from nba_service.engine.chat_config import ChatConfig
from nba_service.engine.reasons import ARBITRATION_STAGES, Stage
from nba_service.errors import FailedPrecondition, NotFound
from nba_service.scoring.registry import ModelHolder
from nba_service.store.chat import ChatStore, SessionState
from nba_service.store.online import OnlineStore
from nba_service.store.policies import PolicyRead
from nba_service.types import OutcomeEvent

log = logging.getLogger(__name__)

ACCEPT_OUTCOMES = frozenset({"accept"})
DECLINE_OUTCOMES = frozenset({"reject", "dismiss"})


@dataclass(frozen=True)
class ChatTriggerInput:
    session_id: str
    customer_id: str = ""
    page_type: str = ""
    dwell_time_s: float = 0.0
    pages_in_session: int = 0
    cart_value: float = 0.0
    errors_seen: int = 0
    returning_visitor: bool = False
    context: Mapping[str, object] = field(default_factory=dict)
    request_id: str = ""


@dataclass
class ChatTriggerResult:
    decision_id: str
    show_invite: bool = False
    kind: str = ""
    queue: str = ""
    action_id: str = ""
    invite_id: str = ""
    score: float = 0.0
    propensity: float = 0.0
    value: float = 0.0
    reason_codes: list[str] = field(default_factory=list)
    offer_callback: bool = False
    treatment: Mapping[str, str] = field(default_factory=dict)
    degraded_reasons: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Plan:
    """What one catalog version's chat section needs per request, computed once."""

    cfg: ChatConfig
    candidates: np.ndarray  # int64 catalog indices of the queues' actions, queue order
    queue_names: tuple[str, ...]


class ChatTrigger:
    def __init__(
        self,
        schema: FeatureSchema,
        online: OnlineStore,
        catalogs: CatalogHolder,
        models: ModelHolder,
        store: ChatStore,
    ) -> None:
        self.schema = schema
        self.online = online
        self.catalogs = catalogs
        self.models = models
        self.store = store
        self._realtime_pos = {f.name: i for i, f in enumerate(schema.of(Source.REALTIME))}
        self._realtime_spec = {f.name: f for f in schema.of(Source.REALTIME)}
        self._cached: tuple[CatalogRuntime, _Plan] | None = None

    def _plan(self, rt: CatalogRuntime) -> _Plan:
        cached = self._cached
        if cached is not None and cached[0] is rt:
            return cached[1]
        cfg = rt.catalog.chat
        if cfg is None:
            raise FailedPrecondition("the catalog has no chat section; chat is not configured")
        idx = np.array([rt.catalog.index_of(q.action) for q in cfg.queues], dtype=np.int64)
        plan = _Plan(cfg, idx, tuple(q.name for q in cfg.queues))
        # Keyed by the runtime object itself: a catalog reload brings a new one.
        self._cached = (rt, plan)
        return plan

    def config(self) -> ChatConfig:
        return self._plan(self.catalogs.current).cfg

    async def evaluate(self, inp: ChatTriggerInput, now_ms: int | None = None) -> ChatTriggerResult:
        rt = self.catalogs.current
        plan = self._plan(rt)
        cfg = plan.cfg
        now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        result = ChatTriggerResult(decision_id=new_decision_id())
        if not cfg.business_hours.is_open(now / 1000):
            result.reason_codes.append("OUTSIDE_BUSINESS_HOURS")
            return result

        # Budget counters (and, for a known customer, features and contact history), the
        # session record and every queue's capacity: one pipelined round trip.
        policy_read = PolicyRead(rt.policies, plan.candidates, cfg.channel, now)
        n_policy = len(policy_read.commands)
        commands = [*policy_read.commands,
                    *self.store.read_commands(inp.session_id, plan.queue_names, now)]
        history: Mapping[bytes, bytes] = {}
        try:
            if inp.customer_id:
                snap = await self.online.fetch(inp.customer_id, now_ms=now, extra=commands)
                replies = list(snap.extra)
                batch, realtime, history = snap.batch, snap.realtime.copy(), snap.history
                if not snap.found:
                    result.degraded_reasons.append("cold_start:unknown_customer")
                if snap.stale:
                    result.degraded_reasons.append("stale_features:" + ",".join(snap.stale))
                if snap.batch_missing:
                    result.degraded_reasons.append(
                        "missing_features:" + ",".join(snap.batch_missing))
            else:
                replies = await self.online.guarded(
                    lambda: self.store.read(inp.session_id, commands))
                fresh = self.online.freshness
                batch, realtime = fresh.batch_defaults, fresh.realtime_defaults.copy()
        except STORE_ERRORS as exc:
            # Without capacity and session state no invite can be promised: say so, calmly.
            log.warning("store unavailable, no chat invite: %r", exc)
            result.reason_codes.append("STORE_UNAVAILABLE")
            result.degraded_reasons.append("store_unavailable")
            return result
        session, caps = self.store.parse_replies(replies[n_policy:], plan.queue_names)

        gate = _session_gate(session, cfg, now)
        if gate:
            result.reason_codes.append(gate)
            return result
        threshold = cfg.dwell_threshold(inp.page_type)
        if inp.dwell_time_s < threshold:
            result.reason_codes.append("DWELL_NOT_REACHED")
            return result

        self._merge_session(inp, cfg, realtime)
        context: dict[str, object] = dict(inp.context)
        context.setdefault("page_type", inp.page_type)
        context.setdefault("returning_visitor", inp.returning_visitor)
        context.setdefault("hour_of_day", cfg.business_hours.local(now / 1000).hour)
        context["channel"] = cfg.channel
        row = rt.encoder.customer_row(batch, realtime, context)
        x = rt.encoder.encode(row, plan.candidates)
        model = self.models.model
        if model is None:
            result.degraded_reasons.append("model_unavailable")
            propensity = np.full(len(plan.candidates), 0.5)
        else:
            propensity = model.scorer.predict(x)

        free = {q.name: caps[q.name].free(q.invites_per_agent, now, cfg.capacity_max_age_s)
                for q in cfg.queues}
        policies = policy_read.evaluate(plan.candidates, history, replies[:n_policy])
        # A contact policy or budget that already removed an action outranks capacity.
        block = np.array(policies.block, dtype=np.int32)
        for pos, q in enumerate(plan.queue_names):
            if block[pos] == 0 and (free[q] or 0) <= 0:
                block[pos] = int(Stage.CAPACITY)
        ranking = rt.engine.rank(row, plan.candidates, propensity, cfg.channel, context,
                                 len(plan.candidates), policy_block=block, now_s=now / 1000,
                                 lever_scale=policies.lever_scale)
        return await self._choose(inp, rt, plan, ranking, free, now, result)

    def _merge_session(self, inp: ChatTriggerInput, cfg: ChatConfig, rt: np.ndarray) -> None:
        """Session totals are at least what the request reports, so the larger value wins."""
        for fld, feature in cfg.session_features.items():
            pos = self._realtime_pos[feature]
            value = float(self._realtime_spec[feature].encode(getattr(inp, fld)))
            if fld == "cart_value":
                # A cart can shrink: the page's own figure is the truth when it has one.
                if value > 0:
                    rt[pos] = value
            elif np.isnan(rt[pos]) or value > rt[pos]:
                rt[pos] = value

    async def _choose(
        self,
        inp: ChatTriggerInput,
        rt: CatalogRuntime,
        plan: _Plan,
        ranking: Ranking,
        free: Mapping[str, int | None],
        now: int,
        result: ChatTriggerResult,
    ) -> ChatTriggerResult:
        cfg = plan.cfg
        r = ranking
        survivors: list[int] = []
        callback_pos: int | None = None
        for pos, q in enumerate(plan.queue_names):
            stage = r.stage(pos)
            priority = float(r.priority[pos])
            if stage == Stage.SERVED or stage in ARBITRATION_STAGES:
                if priority >= cfg.min_score:
                    survivors.append(pos)
                else:
                    result.reason_codes.append(f"{q}:BELOW_MIN_SCORE")
            elif stage == Stage.CAPACITY:
                why = "CAPACITY_UNKNOWN" if free[q] is None else "NO_FREE_AGENT"
                result.reason_codes.append(f"{q}:{why}")
                if priority >= cfg.min_score and cfg.queue(q).callback and (
                    callback_pos is None or priority > float(r.priority[callback_pos])
                ):
                    callback_pos = pos
            else:
                result.reason_codes.append(f"{q}:{Stage(stage).name}")
        survivors.sort(key=lambda p: (-float(r.priority[p]), p))
        for pos in survivors:
            queue = cfg.queue(plan.queue_names[pos])
            self._fill(result, rt, r, pos, queue.name, queue.kind)
            ok, why, _ = await self.store.invite(
                session_id=inp.session_id, invite_id=result.decision_id, queue=queue.name,
                action=queue.action, customer_id=inp.customer_id, now_ms=now,
                hold_s=cfg.invite_hold_s, max_invites=cfg.max_invites_per_session,
                cooldown_s=cfg.decline_cooldown_s, ratio=queue.invites_per_agent,
                session_ttl_s=cfg.session_ttl_s, capacity_max_age_s=cfg.capacity_max_age_s,
            )
            if ok:
                result.show_invite = True
                result.invite_id = result.decision_id
                result.reason_codes[:0] = ["INVITE", "ELIGIBLE", "TOP_SCORE", "AGENT_AVAILABLE"]
                return result
            # Lost a race since the read (another tab took the last agent, or the session
            # changed): the script's reason is the answer; a session gate ends the evaluation.
            result.reason_codes.append(f"{queue.name}:{why}")
            if why not in ("NO_FREE_AGENT", "CAPACITY_UNKNOWN"):
                result.reason_codes.insert(0, why)
                return _clear(result)
            callback_pos = pos if queue.callback else callback_pos
        _clear(result)
        if callback_pos is not None:
            queue = cfg.queue(plan.queue_names[callback_pos])
            self._fill(result, rt, r, callback_pos, queue.name, queue.kind)
            result.offer_callback = True
            result.reason_codes[:0] = ["NO_FREE_AGENT", "CALLBACK_OFFERED"]
        elif survivors or any(c.endswith((":NO_FREE_AGENT", ":CAPACITY_UNKNOWN"))
                              for c in result.reason_codes):
            result.reason_codes.insert(0, "NO_FREE_AGENT")
        elif any(c.endswith(":BELOW_MIN_SCORE") for c in result.reason_codes):
            result.reason_codes.insert(0, "BELOW_MIN_SCORE")
        else:
            result.reason_codes.insert(0, "NO_ELIGIBLE_QUEUE")
        return result

    def _fill(self, result: ChatTriggerResult, rt: CatalogRuntime, r: Ranking, pos: int,
              queue: str, kind: str) -> None:
        action = rt.catalog.actions[int(r.candidates[pos])]
        result.queue, result.kind, result.action_id = queue, kind, action.id
        result.score = float(r.priority[pos])
        result.propensity = float(r.propensity[pos])
        result.value = float(r.value[pos])
        result.treatment = action.treatment_for(self.config().channel)

    async def report_capacity(self, queue: str, available: int, busy: int) -> int:
        cfg = self.config()
        try:
            q = cfg.queue(queue)
        except KeyError:
            raise NotFound(
                f"queue: unknown queue {queue!r}; the catalog declares "
                f"{[q.name for q in cfg.queues]}"
            ) from None
        now = time.time_ns() // 1_000_000
        return await self.store.report_capacity(q.name, available, busy, q.invites_per_agent, now)

    async def on_outcome(self, ev: OutcomeEvent) -> str | None:
        """Settle the invite an outcome answers; None when `ev.decision_id` is not an invite.

        ACCEPT takes the held agent for the chat; REJECT and DISMISS release it and start the
        session's decline cooldown; other outcomes change nothing here. Replays and answers to
        an already settled invite return its status and change nothing.
        """
        cfg = self.catalogs.current.catalog.chat
        if not ev.decision_id or cfg is None:
            return None
        queue = cfg.queue_of_action(ev.action_id)
        if queue is None:
            return None
        if ev.outcome in ACCEPT_OUTCOMES or ev.outcome in DECLINE_OUTCOMES:
            # Server time, not the event's: holds and cooldowns run on one clock.
            now = time.time_ns() // 1_000_000
            taken_s = (cfg.capacity_max_age_s if cfg.capacity_max_age_s is not None
                       else cfg.session_ttl_s)
            status = await self.store.settle(ev.decision_id, queue.name, ev.action_id,
                                             ev.outcome in ACCEPT_OUTCOMES, now, taken_s)
        else:
            status = await self.store.status(ev.decision_id, ev.action_id)
        if status == "unknown":
            return None
        if status == "action_mismatch":
            raise NotFound(
                f"action_id: invite {ev.decision_id!r} was not for action {ev.action_id!r}"
            )
        return status


def _session_gate(session: SessionState, cfg: ChatConfig, now_ms: int) -> str:
    if session.invites >= cfg.max_invites_per_session:
        return "SESSION_INVITE_LIMIT"
    if (session.declined_ms is not None
            and now_ms - session.declined_ms < cfg.decline_cooldown_s * 1000):
        return "DECLINE_COOLDOWN"
    if session.pending is not None and session.pending_until_ms > now_ms:
        return "INVITE_PENDING"
    return ""


def _clear(result: ChatTriggerResult) -> ChatTriggerResult:
    """No invite after all: drop the chosen queue's details so clients cannot act on them."""
    result.kind = result.queue = result.action_id = ""
    result.score = result.propensity = result.value = 0.0
    result.treatment = {}
    return result
