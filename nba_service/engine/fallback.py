"""Fallback sets: what a channel serves when a decision cannot be computed.

Fallback actions have no rules and no validity window (the catalog validator enforces it) and
are exempt from contact policies and budgets, so they can be served with nothing but the
catalog: no features, no model, no store.
"""

from __future__ import annotations

from nba_service.engine.catalog import CHANNELS, Catalog

__all__ = ["FALLBACK_REASONS", "channels_without_fallback", "fallback_actions"]

# Degraded reasons of a fallback answer, by cause.
FALLBACK_REASONS = {
    "model": "fallback:model_unavailable",
    "store": "fallback:store_unavailable",
}


def channels_without_fallback(catalog: Catalog) -> list[str]:
    """Channels of the API that have no fallback set: the service is not ready while any has.

    Every channel a request may name must be answerable in degraded mode, so this covers all
    of `CHANNELS`, not only those the catalog's actions use.
    """
    return [ch for ch in CHANNELS if not catalog.channel_fallbacks.get(ch)]


def fallback_actions(catalog: Catalog, channel: str, placement: str | None,
                     limit: int) -> list[int]:
    """Catalog indices to serve on `channel`/`placement`, in declared order, at most `limit`.

    Fallbacks restricted to other placements are skipped; if that leaves none, the channel's
    whole set is served (a fallback answer is never empty).
    """
    declared = catalog.channel_fallbacks.get(channel, ())
    fitting = [i for i in declared if catalog.actions[i].offered_on(channel, placement or None)]
    return list(fitting or declared)[: max(limit, 0)]
