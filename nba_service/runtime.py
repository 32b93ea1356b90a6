"""The service's resources (store, catalog, model) and the operations the transports call."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import redis.asyncio as aioredis

from features.schema import FeatureSchema
from nba_service.catalog_watch import CatalogReloader, ReloadResult, build_catalog_runtime
from nba_service.chat import ChatTrigger
from nba_service.decide import CatalogHolder, Decider
from nba_service.engine.catalog import load_catalog
from nba_service.engine.fallback import channels_without_fallback
from nba_service.errors import InvalidArgument, NotFound
from nba_service.inspector import Inspector
from nba_service.observability.metrics import ServingState
from nba_service.reliability.safeguards import Safeguards
from nba_service.scoring.registry import ModelHolder
from nba_service.scoring.service import ModelService
from nba_service.scoring.watcher import ReloadOutcome
from nba_service.security.redis_options import redis_client_kwargs
from nba_service.settings import Settings
from nba_service.store.chat import ChatStore
from nba_service.store.decision_log import DecisionLogWriter
from nba_service.store.embedded import EmbeddedRedis
from nba_service.store.outcomes import OutcomeWriter, raise_for_outcome
from nba_service.types import Decision, DecisionRequest, OutcomeEvent

log = logging.getLogger(__name__)


class Runtime:
    """Started by the server before health goes SERVING; stopped after the server drained."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.schema = FeatureSchema.from_yaml(settings.feature_schema)
        self.models = ModelHolder(self.schema, settings.model_slot,
                                  backend=settings.scoring_backend)
        self.safeguards = Safeguards(settings)
        self.models.verifier = self.safeguards.model_verifier
        # Champion/challenger holders, registry watch, scoring threads (docs/scoring.md).
        self.model_service = ModelService(settings, self.schema, self.models,
                                          on_change=self._changed)
        self._embedded: EmbeddedRedis | None = None
        self._client: aioredis.Redis | None = None
        self._decider: Decider | None = None
        self._outcomes: OutcomeWriter | None = None
        self.catalogs: CatalogHolder | None = None
        self.decision_log: DecisionLogWriter | None = None
        self.chat: ChatTrigger | None = None
        self.inspector: Inspector | None = None
        self.catalog_reloader: CatalogReloader | None = None
        self._watch_task: asyncio.Task[None] | None = None
        # Awaited after a catalog reload attempt, e.g. so the server re-evaluates its health.
        self.on_change: Callable[[], Awaitable[None]] | None = None
        self.safeguards.metrics.watch(self._serving_state)

    def _serving_state(self) -> ServingState | None:
        if self.catalogs is None or self.catalog_reloader is None:
            return None
        holders = [self.models]
        if self.model_service.challenger is not None:
            holders.append(self.model_service.challenger)
        return ServingState(
            models=[(h.slot, h.model.version if h.model else "", h.failures) for h in holders],
            catalog_version=self.catalogs.current.catalog.version,
            catalog_reload_failures=self.catalog_reloader.failures,
        )

    @property
    def redis_url(self) -> str:
        if self.settings.redis_url:
            return self.settings.redis_url
        if self._embedded is None:
            raise RuntimeError("runtime not started")
        return self._embedded.url

    async def start(self) -> None:
        if not self.settings.redis_url:
            # The to_thread worker lives as long as the loop, so tying the server to it is safe.
            self._embedded = EmbeddedRedis(die_with_parent=True)
            await asyncio.to_thread(self._embedded.start)
            log.info("started embedded store at %s", self._embedded.url)
        self._client = aioredis.Redis.from_url(
            self.redis_url,
            socket_timeout=self.settings.redis_timeout_s,
            socket_connect_timeout=self.settings.redis_timeout_s,
            **redis_client_kwargs(self.settings),
        )
        await self._client.ping()
        catalog = load_catalog(self.settings.catalog, self.schema)
        # Compiles and warms the kernels now: no request may pay for JIT compilation.
        rt = build_catalog_runtime(catalog, self.schema)
        self.catalogs = CatalogHolder(rt)
        self.catalog_reloader = CatalogReloader(
            self.settings.catalog, self.schema, self.catalogs, on_change=self._changed
        )
        if self.settings.catalog_watch_interval_s > 0:
            self._watch_task = asyncio.create_task(
                self.catalog_reloader.watch(self.settings.catalog_watch_interval_s),
                name="catalog-watch",
            )
        await self.model_service.start()
        self._decider = Decider(
            self.schema,
            # Breaker and deadline budget around every read of a decision (docs/operations.md).
            self.safeguards.guard_store(self._client, self.schema),
            self.catalogs,
            self.models,
            router=self.model_service.router,
            scoring=self.model_service.runner,
        )
        self._outcomes = OutcomeWriter(self._client)
        self.chat = ChatTrigger(self.schema, self._decider.store, self.catalogs, self.models,
                                ChatStore(self._client))
        self.inspector = Inspector(self.schema, self._client, self._decider)
        if self.settings.decision_log:
            s = self.settings
            self.decision_log = DecisionLogWriter(
                self._client, self.schema.hash, queue_size=s.decision_log_queue,
                batch_size=s.decision_log_batch, linger_s=s.decision_log_linger_ms / 1000,
                maxlen=s.decision_log_maxlen,
                outcome_maxlen=s.outcome_log_maxlen, settle_ms=s.decision_log_settle_ms,
            )
            self.decision_log.start()

    async def reload_model(self, slot: str | None = None) -> ReloadOutcome:
        """Admin.ReloadModel: load the slot's current version (or the configured artifact)."""
        return await self.model_service.reload(slot)

    def ready(self) -> bool:
        # Every channel needs a fallback set: without one it could not answer when the model
        # or the store is down.
        return (
            self.catalogs is not None
            and self.models.model is not None
            and not channels_without_fallback(self.catalogs.current.catalog)
        )

    async def _changed(self) -> None:
        if self.on_change is not None:
            await self.on_change()

    async def reload_catalog(self) -> ReloadResult:
        if self.catalog_reloader is None:
            raise RuntimeError("runtime not started")
        return await self.catalog_reloader.reload()

    def details(self) -> dict[str, object]:
        model = self.models.model
        return {
            "model_version": model.version if model else None,
            "model_error": self.models.last_error,
            "catalog_version": self.catalogs.current.catalog.version if self.catalogs else None,
            "decision_log": vars(self.decision_log.counters) if self.decision_log else None,
            "channels_without_fallback": ", ".join(
                channels_without_fallback(self.catalogs.current.catalog)) or None
            if self.catalogs else None,
            **(self.catalog_reloader.details() if self.catalog_reloader else {}),
            **self.model_service.details(),
        }

    async def stop(self) -> None:
        await self.model_service.stop()
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
            self._watch_task = None
        if self.decision_log is not None:
            # After the server drained: every answered decision gets its log entry written.
            await self.decision_log.stop()
            self.decision_log = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._embedded is not None:
            await asyncio.to_thread(self._embedded.stop)
            self._embedded = None

    def started(self) -> bool:
        """Can requests be answered at all (a fallback at least)? False while starting."""
        return self._decider is not None

    def _require(self) -> tuple[Decider, OutcomeWriter, CatalogHolder]:
        if self._decider is None or self._outcomes is None or self.catalogs is None:
            raise RuntimeError("runtime not started")
        return self._decider, self._outcomes, self.catalogs

    async def decide(self, req: DecisionRequest) -> Decision:
        decider, _, _ = self._require()
        decision = await decider.decide(req)
        self.safeguards.observe_decision(req, decision)
        if self.decision_log is not None:
            self.decision_log.submit(decision)
        return decision

    async def record_outcome(self, ev: OutcomeEvent) -> bool:
        _, outcomes, catalogs = self._require()
        rt = catalogs.current
        try:
            index = rt.catalog.index_of(ev.action_id)
        except KeyError:
            raise NotFound(f"action_id: unknown action {ev.action_id!r}") from None
        if ev.outcome == "impression" and not ev.channel:
            raise InvalidArgument("channel", "is required for IMPRESSION outcomes (contact "
                                             "policies count impressions per channel)")
        ts_ms = ev.ts_ms if ev.ts_ms is not None else time.time_ns() // 1_000_000
        if self.chat is not None and await self.chat.on_outcome(ev) is not None:
            # A chat invite is not a Decide decision: the chat store settled its agent hold;
            # the history records the outcome without a decision record to check it against.
            ev = dataclasses.replace(ev, decision_id="")
        if self.decision_log is not None and ev.decision_id:
            await self.decision_log.ensure_recorded(ev.customer_id, ev.decision_id)
        result = await outcomes.record(
            ev.customer_id, ev.action_id, ev.outcome, ev.event_id, ts_ms, ev.value,
            channel=ev.channel or "", decision_id=ev.decision_id,
            params=rt.policies.admission(index, ev.channel),
        )
        # Unknown decision, action not served in it, impression refused: nothing was written.
        raise_for_outcome(result, ev.customer_id, ev.action_id, ev.decision_id,
                          rt.policies.detail, index, ev.channel)
        applied = result.applied
        # Applied outcomes reach the outcome log, then their dedupe marker says so. A replay of
        # one whose append was never confirmed (cancelled, store failure, crash in between)
        # appends it now, at its original time; the export drops a rare double by event_id.
        log_ts = ts_ms if applied else result.unlogged_ts_ms
        if self.decision_log is not None and log_ts is not None:
            await self.decision_log.append_outcome(ev, log_ts, replay=not applied)
            await outcomes.mark_logged(ev.customer_id, ev.event_id)
        return applied

    async def ingest_events(
        self, customer_id: str, events: Sequence[tuple[str, object, str]], ts_ms: int | None
    ) -> int:
        decider, _, _ = self._require()
        try:
            await decider.store.apply_events(customer_id, events, now_ms=ts_ms)
        except ValueError as exc:
            raise InvalidArgument("events", str(exc)) from None
        return len(events)
