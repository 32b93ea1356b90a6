"""Catalog hot reload: build a new catalog runtime off the event loop, then swap one reference.

`CatalogReloader.reload()` (Admin.ReloadCatalog, and the file watcher) reads the catalog file,
and when its content hash differs from the serving version validates it, compiles it, builds
the engine and encoder and warms the kernels up, all in a worker thread. Only a catalog that
passed all of that replaces the serving one, with a single assignment to
`CatalogHolder.current`; the Decider reads that reference once per request, so a request sees
either the old catalog or the new one, never a mix. A refused catalog leaves the old one
serving; the refusal is logged, counted and shown in GetStatus details until a good one loads.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from features.schema import FeatureSchema
from nba_service.decide import CatalogHolder, CatalogRuntime
from nba_service.engine.catalog import Catalog, CatalogError, parse_catalog
from nba_service.engine.fallback import channels_without_fallback

log = logging.getLogger(__name__)

__all__ = ["CatalogReloader", "ReloadResult", "build_catalog_runtime"]


@dataclass(frozen=True)
class ReloadResult:
    changed: bool
    version: str  # the version serving after the call
    previous_version: str
    error: str = ""  # why the new catalog was refused ('' when it was not)


def _parse(raw: bytes, path: Path, schema: FeatureSchema) -> Catalog:
    try:
        text = raw.decode("utf-8")
        doc = yaml.safe_load(text)
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CatalogError(f"catalog {path}: not valid YAML: {exc}") from None
    return parse_catalog(doc, schema, text)


def build_catalog_runtime(catalog: Catalog, schema: FeatureSchema) -> CatalogRuntime:
    """Everything a catalog needs before it may serve, kernels compiled and warmed up."""
    rt = CatalogRuntime.build(catalog, schema)
    rt.engine.warm_up()
    return rt


def _version(raw: bytes) -> str:
    # Same as Catalog.version: the file's bytes are the UTF-8 text it hashes.
    return hashlib.sha256(raw).hexdigest()[:12]


class CatalogReloader:
    """Reloads `path` into `holder`; `watch(interval_s)` polls the file for changes."""

    def __init__(
        self,
        path: Path,
        schema: FeatureSchema,
        holder: CatalogHolder,
        on_change: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.path = Path(path)
        self.schema = schema
        self.holder = holder
        self.on_change = on_change
        self.reloads = 0  # catalogs swapped in
        self.failures = 0  # catalogs refused
        self.last_error = ""  # why the latest attempt failed; '' once a reload succeeds
        self.last_reload_at: float | None = None
        self._lock = asyncio.Lock()
        self._signature: tuple[int, int, int] | None = None

    def details(self) -> dict[str, object]:
        return {
            "catalog_reloads": self.reloads,
            "catalog_reload_failures": self.failures,
            "catalog_reload_error": self.last_error or None,
        }

    async def reload(self) -> ReloadResult:
        """Load the file now; swap it in if it is new and valid. Never raises for a bad file."""
        async with self._lock:  # one build at a time; a second caller sees the first's result
            previous = self.holder.current.catalog.version
            try:
                raw = await asyncio.to_thread(self.path.read_bytes)
                if _version(raw) == previous:
                    self.last_error = ""  # e.g. a bad edit was reverted
                    return ReloadResult(False, previous, previous)
                rt = await asyncio.to_thread(self._build, raw)
            except Exception as exc:  # any failure leaves the serving catalog in place
                self.failures += 1
                self.last_error = str(exc) or type(exc).__name__
                log.error("catalog %s refused, still serving %s: %s", self.path, previous,
                          self.last_error)
                await self._notify()
                return ReloadResult(False, previous, previous, self.last_error)
            self.holder.current = rt  # the swap: one reference assignment
            self.reloads += 1
            self.last_error = ""
            self.last_reload_at = time.time()
            log.info("catalog %s reloaded: %s -> %s", self.path, previous, rt.catalog.version)
            await self._notify()
            return ReloadResult(True, rt.catalog.version, previous)

    def _build(self, raw: bytes) -> CatalogRuntime:
        catalog = _parse(raw, self.path, self.schema)
        missing = channels_without_fallback(catalog)
        if missing:
            raise CatalogError(f"channels without a fallback set: {', '.join(missing)}")
        return build_catalog_runtime(catalog, self.schema)

    async def _notify(self) -> None:
        if self.on_change is not None:
            await self.on_change()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    async def watch(self, interval_s: float) -> None:
        """Poll the file's mtime/size/inode; on any change, reload (content hash decides).

        The first poll always reloads, so a change made while the service started is seen.
        """
        while True:
            await asyncio.sleep(interval_s)
            sig = self._stat()
            if sig == self._signature:
                continue
            self._signature = sig
            if sig is None:
                # Mid-replace or deleted: keep serving, try again when the file is back.
                continue
            await self.reload()
