"""The Python face of the decision kernel: `Engine.rank` for one request.

The engine is pure: it reads a compiled catalog and plain arrays, and never does I/O. Per
request it only converts inputs to the kernel's dtypes and calls one Numba function.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass

import numpy as np

from features.schema import FeatureSchema, FeatureSpec, Source
from nba_service.engine import explore_kernels, kernel
from nba_service.engine.catalog import CHANNELS, Catalog
from nba_service.engine.reasons import POLICY_STAGES, Stage, reason_codes, stage_name

__all__ = ["Engine", "Ranking"]


@dataclass(slots=True)
class Ranking:
    """The outcome of one `Engine.rank` call; per-candidate arrays follow the input order."""

    candidates: np.ndarray  # int64 catalog indices, as given
    served: np.ndarray  # int64 candidate positions in rank order (mandatory first)
    served_actions: np.ndarray  # int64 catalog indices of `served`
    priority: np.ndarray  # float64 P * C * V * L
    propensity: np.ndarray  # float64
    context_weight: np.ndarray  # float64
    value: np.ndarray  # float64
    lever: np.ndarray  # float64
    removed_stage: np.ndarray  # int32 Stage per candidate; 0 = served
    mandatory: np.ndarray  # bool per candidate

    def reason_codes(self, i: int) -> list[str]:
        """Readable codes for candidate position `i`, e.g. ['ELIGIBLE', 'TOP_PRIORITY']."""
        return reason_codes(int(self.removed_stage[i]), bool(self.mandatory[i]))

    def stage(self, i: int) -> Stage:
        return Stage(int(self.removed_stage[i]))

    def removed_by(self, i: int) -> str:
        """The stage name that removed candidate `i` ('' when it was served)."""
        code = int(self.removed_stage[i])
        return "" if code == Stage.SERVED else stage_name(code)


class Engine:
    """Precomputes the catalog's arrays once; `rank` is then one kernel call per request."""

    def __init__(self, catalog: Catalog, schema: FeatureSchema) -> None:
        self.catalog = catalog
        self.schema = schema
        comp = catalog.compiled
        actions = catalog.actions
        self._n_columns = len(schema.features)
        self._channel_codes = {ch: i for i, ch in enumerate(CHANNELS)}
        groups = {g: i for i, g in enumerate(catalog.groups)}
        self._chan_mask = np.array(
            [sum(1 << self._channel_codes[ch] for ch in a.channels) for a in actions],
            dtype=np.int64,
        )
        self._valid_from = np.array([a.validity.start_s for a in actions], dtype=np.float64)
        self._valid_to = np.array([a.validity.end_s for a in actions], dtype=np.float64)
        self._value_const = np.array(
            [math.nan if a.value is None else a.value for a in actions], dtype=np.float64
        )
        self._lever = np.array([a.lever for a in actions], dtype=np.float64)
        self._group = np.array([groups[a.group] for a in actions], dtype=np.int32)
        self._mandatory = np.array([a.mandatory for a in actions], dtype=np.bool_)
        # Which codes a policy_block may hold (0 = not blocked), as a lookup by code.
        self._block_ok = np.zeros(max(int(s) for s in Stage) + 1, dtype=np.bool_)
        self._block_ok[[0, *(int(s) for s in POLICY_STAGES)]] = True
        arb = catalog.arbitration
        sbs = arb.service_before_sales
        self._is_sales = np.array(
            [sbs is not None and a.type in sbs.sales_types for a in actions], dtype=np.bool_
        )
        self._sbs_channels = frozenset() if sbs is None else sbs.assisted_channels
        self._sbs_slot = -1 if sbs is None else schema.index(sbs.complaint_feature)
        self._max_per_group = arb.max_per_group
        self._n_groups = len(groups)
        # Context features the catalog reads (rules, context weights): taken from the request
        # context when present, so the decision does not depend on the caller's row encoding.
        used = {int(s) for s in comp.cw_slots}
        used |= {int(s) for s, op in zip(comp.programs.args, comp.programs.ops, strict=True)
                 if op == kernel.LOAD}
        self._context_overrides: list[tuple[str, int, FeatureSpec]] = [
            (f.name, i, f) for i, f in enumerate(schema.features)
            if i in used and f.source is Source.CONTEXT and f.name != "channel"
        ]
        self._candidates: dict[tuple[str, str | None], np.ndarray] = {}
        placements = {p for a in actions for p in a.placements}
        for ch in CHANNELS:
            for pl in (None, *sorted(placements)):
                arr = np.array(
                    [i for i, a in enumerate(actions) if a.offered_on(ch, pl)], dtype=np.int64
                )
                arr.setflags(write=False)
                self._candidates[(ch, pl)] = arr
        self._ones_cache: dict[int, np.ndarray] = {}
        # Writable twins of the shared read-only candidate arrays, so a request copies nothing.
        self._twins: dict[int, tuple[np.ndarray, np.ndarray]] = {
            id(arr): (arr, np.array(arr, dtype=np.int64)) for arr in self._candidates.values()}
        self._kernel_static = (
            self._chan_mask, self._valid_from, self._valid_to, comp.rule_spans, comp.value_spans,
            self._value_const, self._lever, self._group, self._is_sales, self._mandatory,
            comp.cw_offsets, comp.cw_slots, comp.cw_values, comp.cw_weights,
            comp.programs.ops, comp.programs.args, comp.programs.consts, comp.programs.sets,
            comp.programs.max_stack,
        )

    # ------------------------------------------------------------------ candidates
    def candidates_for(self, channel: str, placement: str | None = None) -> np.ndarray:
        """Catalog indices of the actions offered on `channel` (and `placement`), catalog order.

        An unknown placement gets the actions not restricted to placements. The array is shared
        and read-only.
        """
        self._channel_code(channel)
        arr = self._candidates.get((channel, placement))
        if arr is None:
            # Every unknown placement shares one entry: placements come from clients, and a
            # cache keyed by them would grow without bound.
            arr = self._candidates.get((channel, ""))
            if arr is None:
                arr = self._candidates[(channel, None)]
                arr = arr[[not self.catalog.actions[i].placements for i in arr]]
                arr.setflags(write=False)
                self._candidates[(channel, "")] = arr
                self._twins[id(arr)] = (arr, np.array(arr, dtype=np.int64))
        return arr

    def fallback(self, channel: str) -> list[int]:
        """Catalog indices of the channel's fallback actions, in their declared order."""
        self._channel_code(channel)
        return list(self.catalog.channel_fallbacks.get(channel, ()))

    @property
    def action_groups(self) -> np.ndarray:
        """int32 group code (< `n_groups`) per catalog action, as the kernel's diversity uses."""
        return self._group

    @property
    def n_groups(self) -> int:
        return self._n_groups

    @property
    def max_per_group(self) -> int:
        return self._max_per_group

    def _channel_code(self, channel: str) -> int:
        try:
            return self._channel_codes[channel]
        except KeyError:
            raise ValueError(f"unknown channel {channel!r} (known: {', '.join(CHANNELS)})") \
                from None

    # ------------------------------------------------------------------ ranking
    def rank(
        self,
        customer_row: np.ndarray,
        candidates: np.ndarray,
        propensity: np.ndarray,
        channel: str,
        context: Mapping[str, object],
        limit: int,
        policy_block: np.ndarray | None = None,
        now_s: float | None = None,
        lever_scale: np.ndarray | None = None,
    ) -> Ranking:
        """Filter and rank `candidates` (catalog indices) for one customer on one channel.

        `customer_row` is the float32 model-input row shared by all candidates (missing = NaN);
        `propensity[i]` scores `candidates[i]`; `policy_block[i]` is 0 or the Stage (contact
        policy, budget, capacity) that removed it, computed by the caller from the store;
        `lever_scale[i]` (budget pacing, engine.policies) multiplies candidate i's lever.
        """
        code = self._channel_code(channel)
        n = len(candidates)
        if customer_row.shape != (self._n_columns,):
            raise ValueError(f"customer_row has shape {customer_row.shape}, "
                             f"expected ({self._n_columns},)")
        if len(propensity) != n:
            raise ValueError(f"{len(propensity)} propensities for {n} candidates")
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        # Writable, exact-dtype arrays: a read-only or differently typed array would make Numba
        # compile a new specialisation inside the request. The kernel writes only its outputs.
        cands, public = self._kernel_candidates(candidates)
        prop = np.array(propensity, dtype=np.float64)
        if policy_block is None:
            block = np.zeros(n, dtype=np.int32)
        else:
            block = _kernel_array(policy_block, np.int32)
        if block.shape != (n,):
            raise ValueError(f"policy_block has shape {block.shape}, expected ({n},)")
        if lever_scale is None:
            scale = self._ones(n)
        else:
            scale = _kernel_array(lever_scale, np.float64)
            if scale.shape != (n,):
                raise ValueError(f"{len(lever_scale)} lever multipliers for {n} candidates")
        row = np.empty(self._n_columns + 1, dtype=np.float64)
        row[: self._n_columns] = customer_row
        row[self._n_columns] = code
        for name, col, spec in self._context_overrides:
            raw = context.get(name)
            if raw is not None:
                row[col] = spec.encode(raw)
        sbs_active = channel in self._sbs_channels and row[self._sbs_slot] > 0
        stage = np.empty(n, dtype=np.int32)
        priority, cw, value, lever = np.empty((4, n), dtype=np.float64)
        mandatory = np.empty(n, dtype=np.bool_)
        served = np.empty(min(limit, n), dtype=np.int64)
        k = kernel.decide(
            cands, prop, block, scale, row, time.time() if now_s is None else float(now_s), code,
            bool(sbs_active), int(limit), self._max_per_group, self._n_groups, self._block_ok,
            *self._kernel_static,
            stage, priority, cw, value, lever, mandatory, served,
        )
        if k == kernel.BAD_CANDIDATE:
            raise ValueError("candidate index out of range of the catalog")
        if k == kernel.BAD_BLOCK:
            bad = set(np.unique(block[block != 0]).tolist()) - {int(s) for s in POLICY_STAGES}
            raise ValueError(f"policy_block codes {sorted(bad)} are not policy stages")
        served = served[:k]
        return Ranking(
            candidates=public, served=served, served_actions=cands[served], priority=priority,
            propensity=prop, context_weight=cw, value=value, lever=lever, removed_stage=stage,
            mandatory=mandatory,
        )

    def _kernel_candidates(self, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(what the kernel reads, what Ranking.candidates shows): a fresh int64 copy, or for
        the engine's own shared arrays a cached writable twin (the kernel never writes it)
        while the Ranking keeps the read-only original."""
        hit = self._twins.get(id(candidates))
        if hit is not None and hit[0] is candidates:
            return hit[1], candidates
        cands = np.array(candidates, dtype=np.int64)
        return cands, cands

    def _ones(self, n: int) -> np.ndarray:
        """A shared all-ones lever scale of length n (the kernel only reads it)."""
        ones = self._ones_cache.get(n)
        if ones is None:
            ones = np.ones(n, dtype=np.float64)
            if len(self._ones_cache) < 64:
                self._ones_cache[n] = ones
        return ones

    def detail(self, ranking: Ranking, i: int) -> str:
        """A human-readable detail for why candidate `i` was removed (for explanations)."""
        stage = ranking.stage(i)
        action = self.catalog.actions[int(ranking.candidates[i])]
        if stage in (Stage.RULE_ELIGIBILITY, Stage.RULE_APPLICABILITY, Stage.RULE_SUITABILITY):
            fld = stage.name.removeprefix("RULE_").lower()
            return f"{fld}: {getattr(action, fld)}"
        if stage is Stage.GROUP_LIMIT:
            return f"group {action.group!r} already has {self._max_per_group} served"
        if stage is Stage.CHANNEL_NOT_ALLOWED:
            return f"offered on {', '.join(action.channels)}"
        if stage is Stage.VALUE_UNAVAILABLE:
            return f"value: {action.value_expr}"
        if stage is Stage.OUTSIDE_VALIDITY:
            v = action.validity
            return f"valid from {v.start_s:.0f} to {v.end_s:.0f} (epoch seconds)"
        if stage is Stage.CONTACT_POLICY:
            return f"contact policy: {_settings(action.contact_policy)}"
        if stage is Stage.BUDGET:
            return f"budget: {_settings(action.budget)}"
        if stage is Stage.CAPACITY:
            return "no capacity left (e.g. no chat agent available)"
        if stage is Stage.SERVICE_BEFORE_SALES:
            sbs = self.catalog.arbitration.service_before_sales
            feat = sbs.complaint_feature if sbs is not None else "complaints"
            return f"{action.type.value} action while {feat} > 0 on an assisted channel"
        if stage is Stage.INVALID_PROPENSITY:
            return "the model returned no propensity (NaN)"
        if stage is Stage.RANK_CUTOFF:
            return f"priority {ranking.priority[i]:.6g} ranks below the served actions"
        if stage is Stage.CONTROL_GROUP:
            return "the customer is in the random control group"
        return ""

    def warm_up(self) -> None:
        """Compile the kernels and run one decision per channel, before serving traffic."""
        kernel.warm_up()
        explore_kernels.warm_up()
        row = np.full(self._n_columns, np.nan, dtype=np.float32)
        for ch in CHANNELS:
            cands = self.candidates_for(ch)
            self.rank(row, cands, np.full(len(cands), 0.5), ch, {}, 3)


def _kernel_array(x: np.ndarray, dtype: type) -> np.ndarray:
    """`x` itself when the kernel can read it as is, else an exact-dtype writable copy."""
    if (isinstance(x, np.ndarray) and x.dtype == dtype and x.ndim == 1
            and x.flags.c_contiguous and x.flags.writeable):
        return x
    return np.array(x, dtype=dtype)


def _settings(block: object) -> str:
    """'max_impressions=3, window_s=604800' for the parts of a policy/budget that are set."""
    if block is None or not is_dataclass(block):
        return "limit reached"
    parts = [f"{f.name}={getattr(block, f.name)}" for f in fields(block)
             if getattr(block, f.name) not in (None, False)]
    return ", ".join(parts) or "limit reached"
