"""Registry watch and explicit reloads: a new `current` version is loaded off the event loop
and swapped in with one reference assignment (ModelHolder), or refused and the old one kept.

The poll reads each slot's `current` file (a few bytes) every `interval_s`; only a version
that differs from the one served, and is not the one that failed last, costs a load, which
runs in a worker thread: verification, parity checks and timing never block requests.
`reload(slot)` (Admin.ReloadModel) loads the current version even if it failed before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from nba_service.scoring.registry import ModelHolder, RegistryError, read_current

__all__ = ["ModelWatcher", "ReloadOutcome"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReloadOutcome:
    changed: bool
    version: str  # serving after the call ('' if nothing is)
    previous_version: str
    error: str = ""  # why the new version was refused ('' when it was not)


class ModelWatcher:
    def __init__(
        self,
        registry: Path | None,
        holders: Sequence[ModelHolder],
        model_path: Path | None = None,
        on_change: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.registry = registry
        self.holders = {h.slot: h for h in holders}
        self.model_path = model_path  # the champion's artifact when there is no registry
        self.on_change = on_change
        self.polls = 0
        self.swaps = 0
        self.poll_errors = 0
        self._task: asyncio.Task[None] | None = None

    def holder(self, slot: str | None) -> ModelHolder:
        if not slot:
            return next(iter(self.holders.values()))
        try:
            return self.holders[slot]
        except KeyError:
            raise KeyError(f"slot {slot!r} is not served (served: "
                           f"{', '.join(self.holders)})") from None

    async def reload(self, slot: str | None = None, force: bool = True) -> ReloadOutcome:
        """Load the slot's current version (or the configured artifact) if it is not served."""
        holder = self.holder(slot)
        before = holder.version or ""
        if self.registry is not None:
            ok = await asyncio.to_thread(holder.try_load_current, self.registry, force)
        elif self.model_path is not None and holder is self.holder(None):
            ok = await asyncio.to_thread(holder.try_load, self.model_path)
        else:
            return ReloadOutcome(False, before, before, "no model registry or path configured")
        after = holder.version or ""
        changed = after != before
        if changed:
            self.swaps += 1
            log.info("slot %s: model %s replaced %s", holder.slot, after, before or "nothing")
            if self.on_change is not None:
                await self.on_change()
        return ReloadOutcome(changed, after, before,
                             "" if ok else holder.last_error or "not loaded")

    async def poll_once(self) -> bool:
        """One look at every slot's `current`; True when a model was swapped."""
        if self.registry is None:
            return False
        self.polls += 1
        swapped = False
        for holder in self.holders.values():
            try:
                version = read_current(self.registry, holder.slot)
            except (RegistryError, OSError) as exc:
                self.poll_errors += 1
                log.warning("slot %s: cannot read the current version: %s", holder.slot, exc)
                continue
            if version is None or version in (holder.version, holder.failed_version):
                continue
            outcome = await self.reload(holder.slot, force=False)
            swapped = swapped or outcome.changed
        return swapped

    async def run(self, interval_s: float) -> None:
        while True:
            try:
                await self.poll_once()
            except Exception:  # the watcher must outlive any one bad poll
                self.poll_errors += 1
                log.exception("model registry poll failed")
            await asyncio.sleep(interval_s)

    def start(self, interval_s: float) -> None:
        if self._task is None and self.registry is not None and interval_s > 0:
            self._task = asyncio.create_task(self.run(interval_s), name="model-watch")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def details(self) -> dict[str, object]:
        return {"model_watch_polls": self.polls, "model_swaps": self.swaps,
                "model_watch_errors": self.poll_errors}
