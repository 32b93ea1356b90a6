"""The action catalog: what can be offered, where, to whom, and what it is worth.

`load_catalog` validates the whole YAML file and compiles every expression up front, so a bad
catalog fails at load (naming the action, the field and the position) and never at request
time. The format is documented in docs/catalog.md.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from features.schema import DType, FeatureSchema, Source
from nba_service.engine.catalog_fields import (
    CHANNELS,
    ActionType,
    ArbitrationConfig,
    Budget,
    CatalogError,
    ChannelLimits,
    ContactPolicy,
    FieldError,
    ServiceBeforeSales,
    Treatment,
    Validity,
    parse_arbitration,
    parse_budget,
    parse_channel_limits,
    parse_contact_policy,
    parse_treatments,
    parse_validity,
)
from nba_service.engine.chat_config import ChatConfig, parse_chat
from nba_service.engine.explore_config import ExplorationConfig, parse_exploration
from nba_service.engine.outcome_fields import (
    DEFAULT_OUTCOMES,
    OutcomeConfig,
    OutcomeFieldError,
    parse_action_outcomes,
    parse_outcome_defaults,
)
from nba_service.engine.rules import ProgramBuilder, Programs, RuleError, SymbolTable

__all__ = [
    "CHANNELS",
    "Action",
    "ActionType",
    "ArbitrationConfig",
    "Budget",
    "Catalog",
    "CatalogError",
    "CompiledCatalog",
    "ContactPolicy",
    "ContextWeight",
    "ServiceBeforeSales",
    "Treatment",
    "Validity",
    "load_catalog",
    "parse_catalog",
]

RULE_FIELDS = ("eligibility", "applicability", "suitability")
_ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]*$")
_ACTION_FIELDS = frozenset({
    "id", "type", "group", "channels", "placements", "value", "lever", "context_weights",
    *RULE_FIELDS, "treatments", "fallback", "mandatory", "validity", "contact_policy", "budget",
    "description", "response_window", "outcome_weights",
})


@dataclass(frozen=True)
class ContextWeight:
    """Pega-style: ContextWeight = 1 + sum(weights whose key/value match the request) / 100."""

    key: str
    value: str | float
    weight: float


@dataclass(frozen=True)
class Action:
    id: str
    type: ActionType
    group: str
    channels: tuple[str, ...]
    treatments: Mapping[str, Treatment]
    placements: tuple[str, ...] = ()
    value: float | None = 0.0  # None when `value_expr` computes it per customer
    value_expr: str | None = None
    lever: float = 1.0
    context_weights: tuple[ContextWeight, ...] = ()
    eligibility: str | None = None
    applicability: str | None = None
    suitability: str | None = None
    fallback: bool = False
    mandatory: bool = False
    validity: Validity = field(default_factory=Validity)
    contact_policy: ContactPolicy | None = None
    budget: Budget | None = None
    description: str = ""
    outcomes: OutcomeConfig = DEFAULT_OUTCOMES  # response window and outcome weights

    @property
    def has_rules(self) -> bool:
        return any(getattr(self, f) for f in RULE_FIELDS)

    def offered_on(self, channel: str, placement: str | None = None) -> bool:
        if channel not in self.channels:
            return False
        return placement is None or not self.placements or placement in self.placements

    def treatment(self, channel: str) -> Treatment:
        """The channel's treatment, else the default one (validated to exist at load)."""
        return self.treatments.get(channel) or self.treatments["default"]

    def treatment_for(self, channel: str) -> dict[str, str]:
        """The treatment as a plain mapping (title, text and cta/url when set)."""
        t = self.treatment(channel)
        out = {"title": t.title, "text": t.text}
        if t.cta is not None:
            out["cta"] = t.cta
        if t.url is not None:
            out["url"] = t.url
        return out

    def attributes(self) -> dict[str, object]:
        """What the feature encoder reads for ACTION-source features."""
        return {
            "action_id": self.id,
            "action_type": self.type.value,
            "action_group": self.group,
            "action_value": math.nan if self.value is None else self.value,
        }


@dataclass(frozen=True)
class CompiledCatalog:
    """Everything the kernel needs, as arrays indexed by catalog position."""

    programs: Programs
    rule_spans: np.ndarray  # int32 (A, 3, 2): start/end per eligibility/applicability/suitability
    value_spans: np.ndarray  # int32 (A, 2); start == end -> constant value
    cw_offsets: np.ndarray  # int32 (A + 1,): context weights of action a are [off[a], off[a+1])
    cw_slots: np.ndarray  # int32 evaluation-row slot of the key
    cw_values: np.ndarray  # float64 encoded value the slot must equal
    cw_weights: np.ndarray  # float64
    symbols: SymbolTable


@dataclass(frozen=True)
class Catalog:
    name: str
    actions: tuple[Action, ...]
    version: str
    channel_fallbacks: Mapping[str, tuple[int, ...]]
    arbitration: ArbitrationConfig
    compiled: CompiledCatalog = field(repr=False)
    exploration: ExplorationConfig = field(default_factory=ExplorationConfig)
    channel_limits: Mapping[str, ChannelLimits] = field(default_factory=dict)
    chat: ChatConfig | None = None  # the `chat:` section (proactive chat invites)
    _index: Mapping[str, int] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {a.id: i for i, a in enumerate(self.actions)})

    def __len__(self) -> int:
        return len(self.actions)

    def index_of(self, action_id: str) -> int:
        try:
            return self._index[action_id]
        except KeyError:
            raise KeyError(f"unknown action {action_id!r}") from None

    @property
    def groups(self) -> tuple[str, ...]:
        """Distinct groups in first-appearance order (group codes used by the kernel)."""
        return tuple(dict.fromkeys(a.group for a in self.actions))


def load_catalog(path: str | Path, schema: FeatureSchema) -> Catalog:
    raw = Path(path).read_bytes()
    text = raw.decode("utf-8")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogError(f"catalog {path}: not valid YAML: {exc}") from None
    return parse_catalog(doc, schema, text)


def parse_catalog(doc: object, schema: FeatureSchema, source_text: str | None = None) -> Catalog:
    """Validate a parsed catalog document and compile its expressions against `schema`."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("actions"), list):
        raise CatalogError("catalog: expected a mapping with an 'actions' list")
    unknown = set(doc) - {"name", "actions", "channels", "arbitration", "outcomes",
                          "exploration", "chat"}
    if unknown:
        raise CatalogError(f"catalog: unknown top-level field(s) {sorted(unknown)}")
    if source_text is None:
        source_text = json.dumps(doc, sort_keys=True, default=str)
    version = hashlib.sha256(source_text.encode("utf-8")).hexdigest()[:12]

    try:
        outcome_defaults = parse_outcome_defaults(doc.get("outcomes"))
    except OutcomeFieldError as exc:
        raise CatalogError(f"catalog: field {exc.field!r}: {exc.message}") from None
    actions: list[Action] = []
    seen: set[str] = set()
    for i, raw in enumerate(doc["actions"]):
        action = _parse_action(i, raw, schema, outcome_defaults)
        if action.id in seen:
            raise CatalogError(f"action {action.id!r}: field 'id': duplicate id")
        seen.add(action.id)
        actions.append(action)
    if not actions:
        raise CatalogError("catalog: 'actions' is empty")
    index = {a.id: i for i, a in enumerate(actions)}
    fallbacks = _parse_channels(doc.get("channels"), actions, index)
    arbitration = parse_arbitration(doc.get("arbitration"), schema)
    exploration = parse_exploration(doc.get("exploration"))
    compiled = _compile(actions, schema)
    return Catalog(
        name=str(doc.get("name", "catalog")),
        actions=tuple(actions),
        version=version,
        channel_fallbacks=fallbacks,
        arbitration=arbitration,
        compiled=compiled,
        exploration=exploration,
        channel_limits=parse_channel_limits(doc.get("channels")),
        chat=parse_chat(doc.get("chat"), [(a.id, a.type, a.channels) for a in actions], schema),
    )


def _parse_action(
    i: int, raw: object, schema: FeatureSchema, outcome_defaults: OutcomeConfig = DEFAULT_OUTCOMES
) -> Action:
    if not isinstance(raw, Mapping):
        raise CatalogError(f"actions[{i}]: expected a mapping, got {type(raw).__name__}")
    aid = raw.get("id")
    if not isinstance(aid, str) or not _ID_RE.match(aid):
        raise CatalogError(f"actions[{i}]: field 'id': must be a string matching {_ID_RE.pattern}")

    def err(fld: str, msg: str) -> CatalogError:
        return CatalogError(f"action {aid!r}: field {fld!r}: {msg}")

    unknown = set(raw) - _ACTION_FIELDS
    if unknown:
        allowed = ", ".join(sorted(_ACTION_FIELDS))
        raise err(sorted(unknown)[0], f"unknown field (allowed: {allowed})")
    try:
        atype = ActionType(str(raw.get("type")))
    except ValueError:
        raise err("type", f"{raw.get('type')!r} is not one of "
                          f"{', '.join(t.value for t in ActionType)}") from None
    group = raw.get("group")
    if not isinstance(group, str) or not group:
        raise err("group", "must be a non-empty string")
    group_spec = schema.get("action_group")
    if group_spec is not None and group_spec.vocabulary and group not in group_spec.vocabulary:
        raise err("group", f"{group!r} is not in the action_group vocabulary "
                           f"({', '.join(group_spec.vocabulary)})")
    channels = _str_list(raw.get("channels"), err, "channels", required=True)
    for ch in channels:
        if ch not in CHANNELS:
            raise err("channels", f"unknown channel {ch!r} (known: {', '.join(CHANNELS)})")
    placements = _str_list(raw.get("placements"), err, "placements", required=False)

    value_raw = raw.get("value", 0.0)
    value: float | None
    value_expr: str | None = None
    if isinstance(value_raw, str):
        value, value_expr = None, value_raw
    elif isinstance(value_raw, int | float) and not isinstance(value_raw, bool):
        value = float(value_raw)
        if not math.isfinite(value):
            raise err("value", "must be finite")
    else:
        raise err("value", "must be a number or an expression string")
    lever = raw.get("lever", 1.0)
    if isinstance(lever, bool) or not isinstance(lever, int | float) or not lever >= 0 \
            or not math.isfinite(lever):
        raise err("lever", f"must be a finite number >= 0, got {lever!r}")

    rules: dict[str, str | None] = {}
    for fld in RULE_FIELDS:
        text = raw.get(fld)
        if text is not None and (not isinstance(text, str) or not text.strip()):
            raise err(fld, "must be a non-empty expression string")
        rules[fld] = text.strip() if isinstance(text, str) else None

    fallback, mandatory = raw.get("fallback", False), raw.get("mandatory", False)
    for fld, flag in (("fallback", fallback), ("mandatory", mandatory)):
        if not isinstance(flag, bool):
            raise err(fld, "must be true or false")
    try:
        treatments = parse_treatments(raw.get("treatments"), channels)
        validity = parse_validity(raw.get("validity"))
        contact_policy = parse_contact_policy(raw.get("contact_policy"))
        budget = parse_budget(raw.get("budget"))
        outcomes = parse_action_outcomes(raw.get("response_window"), raw.get("outcome_weights"),
                                         outcome_defaults)
    except (FieldError, OutcomeFieldError) as exc:
        raise err(exc.field, exc.message) from None
    return Action(
        id=aid, type=atype, group=group, channels=channels, treatments=treatments,
        placements=placements, value=value, value_expr=value_expr, lever=float(lever),
        context_weights=_parse_context_weights(raw.get("context_weights"), schema, err),
        eligibility=rules["eligibility"], applicability=rules["applicability"],
        suitability=rules["suitability"], fallback=fallback, mandatory=mandatory,
        validity=validity, contact_policy=contact_policy, budget=budget, outcomes=outcomes,
        description=str(raw.get("description", "")),
    )


def _str_list(raw: object, err: Any, fld: str, *, required: bool) -> tuple[str, ...]:
    if raw is None and not required:
        return ()
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw) or \
            (required and not raw):
        raise err(fld, "must be a non-empty list of strings" if required else
                  "must be a list of strings")
    if len(set(raw)) != len(raw):
        raise err(fld, "has duplicates")
    return tuple(raw)


def _parse_context_weights(
    raw: object, schema: FeatureSchema, err: Any
) -> tuple[ContextWeight, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise err("context_weights", "must be a list of {key, value, weight}")
    out: list[ContextWeight] = []
    for j, item in enumerate(raw):
        where = f"context_weights[{j}]"
        if not isinstance(item, Mapping) or set(item) != {"key", "value", "weight"}:
            raise err(where, "must be a mapping with exactly key, value and weight")
        key, value, weight = item["key"], item["value"], item["weight"]
        if key == "channel":
            if value not in CHANNELS:
                raise err(where, f"unknown channel {value!r}")
        else:
            spec = schema.get(str(key))
            if spec is None or spec.source is not Source.CONTEXT:
                raise err(where, f"key {key!r} is not a context feature of the schema")
            if spec.dtype is DType.CATEGORICAL:
                if str(value) not in spec.vocabulary:
                    raise err(where, f"{value!r} is not a category of {key!r} "
                                     f"(known: {', '.join(spec.vocabulary)})")
                value = str(value)
            elif isinstance(value, bool) or not isinstance(value, int | float):
                raise err(where, f"value of numeric key {key!r} must be a number")
        if isinstance(weight, bool) or not isinstance(weight, int | float) \
                or not math.isfinite(weight):
            raise err(where, "weight must be a finite number")
        out.append(ContextWeight(str(key), value, float(weight)))
    return tuple(out)


def _parse_channels(raw: object, actions: list[Action],
                    index: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
    if not isinstance(raw, Mapping):
        raise CatalogError("catalog: 'channels' must map each channel to {fallback: [action ids]}")
    out: dict[str, tuple[int, ...]] = {}
    for ch, conf in raw.items():
        if ch not in CHANNELS:
            raise CatalogError(f"channel {ch!r}: unknown channel (known: {', '.join(CHANNELS)})")
        ids = conf.get("fallback") if isinstance(conf, Mapping) else None
        if not isinstance(ids, list) or not ids:
            raise CatalogError(f"channel {ch!r}: field 'fallback': needs a non-empty list of "
                               "action ids")
        for aid in ids:
            if aid not in index:
                raise CatalogError(f"channel {ch!r}: field 'fallback': unknown action {aid!r}")
            a = actions[index[aid]]
            if not a.fallback:
                raise CatalogError(f"action {aid!r}: field 'fallback': listed as a fallback of "
                                   f"{ch} but not marked 'fallback: true'")
            if ch not in a.channels:
                raise CatalogError(f"action {aid!r}: field 'channels': fallback of {ch} but not "
                                   f"offered on {ch}")
        out[ch] = tuple(index[aid] for aid in ids)
    for a in actions:
        if a.fallback:
            bad = next((f for f in RULE_FIELDS if getattr(a, f)), None)
            if bad:
                raise CatalogError(f"action {a.id!r}: field {bad!r}: a fallback action cannot "
                                   "have rules (it must always be servable)")
            if a.validity.bounded:
                raise CatalogError(f"action {a.id!r}: field 'validity': a fallback action "
                                   "cannot have a validity window")
        for ch in a.channels:
            if ch not in out:
                raise CatalogError(f"channel {ch!r}: no fallback declared under 'channels' "
                                   f"(used by action {a.id!r})")
    return out


def _compile(actions: list[Action], schema: FeatureSchema) -> CompiledCatalog:
    table = SymbolTable.from_schema(schema, CHANNELS)
    builder = ProgramBuilder(table)
    n = len(actions)
    rule_spans = np.zeros((n, 3, 2), dtype=np.int32)
    value_spans = np.zeros((n, 2), dtype=np.int32)
    cw_offsets = np.zeros(n + 1, dtype=np.int32)
    cw_slots: list[int] = []
    cw_values: list[float] = []
    cw_weights: list[float] = []
    for i, a in enumerate(actions):
        exprs = [(f, getattr(a, f)) for f in RULE_FIELDS] + [("value", a.value_expr)]
        for j, (fld, text) in enumerate(exprs):
            if text is None:
                continue
            try:
                span = builder.add(text)
            except RuleError as exc:
                raise CatalogError(f"action {a.id!r}: field {fld!r}: {exc}") from None
            if fld == "value":
                value_spans[i] = span
            else:
                rule_spans[i, j] = span
        for cw in a.context_weights:
            sym = table.symbols[cw.key]
            cw_slots.append(sym.slot)
            code = sym.code(cw.value) if isinstance(cw.value, str) else None
            cw_values.append(float(code) if code is not None else float(cw.value))
            cw_weights.append(cw.weight)
        cw_offsets[i + 1] = len(cw_slots)
    return CompiledCatalog(
        programs=builder.build(),
        rule_spans=rule_spans,
        value_spans=value_spans,
        cw_offsets=cw_offsets,
        cw_slots=np.asarray(cw_slots, dtype=np.int32),
        cw_values=np.asarray(cw_values, dtype=np.float64),
        cw_weights=np.asarray(cw_weights, dtype=np.float64),
        symbols=table,
    )
