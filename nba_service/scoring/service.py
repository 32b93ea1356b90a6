"""The scoring side of the runtime: model holders, router, scoring threads and the watcher,
wired from the settings and started / stopped as one piece (Runtime.start / Runtime.stop)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from features.schema import FeatureSchema
from nba_service.scoring import compiled
from nba_service.scoring.registry import ModelHolder, read_current, version_dir
from nba_service.scoring.router import ModelRouter
from nba_service.scoring.runner import ScoringRunner
from nba_service.scoring.watcher import ModelWatcher, ReloadOutcome
from nba_service.settings import Settings

__all__ = ["ModelService"]

log = logging.getLogger(__name__)


class ModelService:
    def __init__(self, settings: Settings, schema: FeatureSchema, champion: ModelHolder,
                 on_change: Callable[[], Awaitable[None]] | None = None) -> None:
        self.settings = settings
        self.champion = champion
        self.challenger: ModelHolder | None = None
        if settings.challenger_slot and settings.model_registry is not None:
            self.challenger = ModelHolder(schema, settings.challenger_slot,
                                          backend=settings.scoring_backend)
            # Same checks (e.g. the artifact signature) for both arms.
            self.challenger.verifier = champion.verifier
        self.router = ModelRouter(champion, self.challenger, settings.challenger_share,
                                  settings.challenger_shadow)
        self.runner = ScoringRunner(settings.score_inline_max_us, settings.scoring_threads)
        holders = [champion] + ([self.challenger] if self.challenger else [])
        self.watcher = ModelWatcher(settings.model_registry, holders, settings.model_path,
                                    on_change)

    async def start(self) -> None:
        """Compile the kernels and load the configured models before the server says SERVING,
        then start watching the registry."""
        await asyncio.to_thread(compiled.warm_up)
        await asyncio.to_thread(self._load_initial)
        self.runner.start()
        self.watcher.start(self.settings.model_watch_interval_s)

    def _load_initial(self) -> None:
        s = self.settings
        if s.model_path is not None:
            self.champion.try_load(s.model_path)
        elif s.model_registry is not None:
            self._load_current(self.champion)
        else:
            log.warning("no model configured (NBA_MODEL_PATH or NBA_MODEL_REGISTRY)")
        if self.challenger is not None:
            self._load_current(self.challenger)

    def _load_current(self, holder: ModelHolder) -> None:
        registry = self.settings.model_registry
        assert registry is not None
        version = read_current(registry, holder.slot)
        if version is None:
            log.warning("registry %s: slot %s has no current model yet", registry, holder.slot)
            return
        if not holder.try_load(version_dir(registry, holder.slot, version)):
            holder.failed_version = version

    async def stop(self) -> None:
        await self.watcher.stop()
        await asyncio.to_thread(self.runner.stop)

    async def reload(self, slot: str | None = None) -> ReloadOutcome:
        return await self.watcher.reload(slot)

    def details(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for prefix, holder in (("model", self.champion), ("challenger", self.challenger)):
            if holder is None:
                continue
            for key, value in holder.health().items():
                if key not in ("version", "last_error") or prefix == "challenger":
                    out[f"{prefix}_{key}"] = value
        if self.challenger is not None:
            out["challenger_share"] = self.router.share
            out["challenger_mode"] = "shadow" if self.router.shadow else "split"
        out.update(self.watcher.details())
        out.update(self.runner.details())
        return out
