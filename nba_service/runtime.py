"""The service's resources (store, catalog, model) and the operations the transports call."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import redis.asyncio as aioredis

from features.schema import FeatureSchema
from nba_service.decide import CatalogHolder, CatalogRuntime, Decider
from nba_service.engine.catalog import load_catalog
from nba_service.errors import InvalidArgument, NotFound
from nba_service.scoring.registry import ModelHolder, read_current
from nba_service.settings import Settings
from nba_service.store.embedded import EmbeddedRedis
from nba_service.store.online import OnlineStore
from nba_service.store.outcomes import OutcomeWriter
from nba_service.types import Decision, DecisionRequest, OutcomeEvent

log = logging.getLogger(__name__)


class Runtime:
    """Started by the server before health goes SERVING; stopped after the server drained."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.schema = FeatureSchema.from_yaml(settings.feature_schema)
        self.models = ModelHolder(self.schema)
        self._embedded: EmbeddedRedis | None = None
        self._client: aioredis.Redis | None = None
        self._decider: Decider | None = None
        self._outcomes: OutcomeWriter | None = None
        self.catalogs: CatalogHolder | None = None

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
        )
        await self._client.ping()
        catalog = load_catalog(self.settings.catalog, self.schema)
        rt = CatalogRuntime.build(catalog, self.schema)
        # Compile the kernels now: no request may pay for JIT compilation.
        rt.engine.warm_up()
        self.catalogs = CatalogHolder(rt)
        self._load_model()
        self._decider = Decider(
            self.schema, OnlineStore(self._client, self.schema), self.catalogs, self.models
        )
        self._outcomes = OutcomeWriter(self._client)

    def _load_model(self) -> None:
        path = self.settings.model_path
        if path is None and self.settings.model_registry is not None:
            registry = self.settings.model_registry
            version = read_current(registry, self.settings.model_slot)
            if version is not None:
                path = registry / self.settings.model_slot / "versions" / version
        if path is None:
            log.warning("no model configured (NBA_MODEL_PATH or NBA_MODEL_REGISTRY)")
            return
        if not self.models.try_load(path):
            log.error("model at %s not loaded: %s", path, self.models.last_error)

    def ready(self) -> bool:
        return self.catalogs is not None and self.models.model is not None

    def details(self) -> dict[str, object]:
        model = self.models.model
        return {
            "model_version": model.version if model else None,
            "model_error": self.models.last_error,
            "catalog_version": self.catalogs.current.catalog.version if self.catalogs else None,
        }

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._embedded is not None:
            await asyncio.to_thread(self._embedded.stop)
            self._embedded = None

    def _require(self) -> tuple[Decider, OutcomeWriter, CatalogHolder]:
        if self._decider is None or self._outcomes is None or self.catalogs is None:
            raise RuntimeError("runtime not started")
        return self._decider, self._outcomes, self.catalogs

    async def decide(self, req: DecisionRequest) -> Decision:
        decider, _, _ = self._require()
        return await decider.decide(req)

    async def record_outcome(self, ev: OutcomeEvent) -> bool:
        _, outcomes, catalogs = self._require()
        try:
            catalogs.current.catalog.index_of(ev.action_id)
        except KeyError:
            raise NotFound(f"action_id: unknown action {ev.action_id!r}") from None
        ts_ms = ev.ts_ms if ev.ts_ms is not None else time.time_ns() // 1_000_000
        return await outcomes.record(
            ev.customer_id, ev.action_id, ev.outcome, ev.event_id, ts_ms, ev.value
        )

    async def ingest_events(
        self, customer_id: str, events: Sequence[tuple[str, object, str]], ts_ms: int | None
    ) -> int:
        decider, _, _ = self._require()
        try:
            await decider.store.apply_events(customer_id, events, now_ms=ts_ms)
        except ValueError as exc:
            raise InvalidArgument("events", str(exc)) from None
        return len(events)
