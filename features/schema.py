"""The feature schema: one object that the loader, the encoder, training and serving all share.

Column order of the model matrix is the order of the features in the schema file, so the
training package and the service cannot disagree about it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


class SchemaError(ValueError):
    """A feature schema file is invalid; the message names the feature and the field."""


class DType(StrEnum):
    FLOAT = "float"
    INT = "int"
    BOOL = "bool"
    CATEGORICAL = "categorical"


class Source(StrEnum):
    BATCH = "batch"
    REALTIME = "realtime"
    CONTEXT = "context"
    ACTION = "action"


def parse_duration(value: object) -> float | None:
    """`30d`, `12h`, `90s`, `500ms` or a number of seconds -> seconds; None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        return float(value)
    m = _DURATION_RE.match(str(value))
    if not m:
        raise ValueError(f"not a duration: {value!r} (use e.g. 30d, 12h, 15m, 90s, 500ms)")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    dtype: DType
    source: Source
    default: float | int | bool | str | None = None
    max_age_s: float | None = None
    vocabulary: tuple[str, ...] = ()
    description: str = ""
    _codes: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.dtype is DType.CATEGORICAL and not self._codes:
            object.__setattr__(self, "_codes", {v: i for i, v in enumerate(self.vocabulary)})

    def code(self, category: str) -> int | None:
        """Index of a category in the vocabulary (the value the model sees), None if unknown."""
        return self._codes.get(category)

    def encode_raw(self, raw: object) -> float:
        """Encode one raw value; NaN when it is missing or not valid for this feature."""
        if raw is None:
            return math.nan
        if self.dtype is DType.CATEGORICAL:
            code = self._codes.get(str(raw))
            return math.nan if code is None else float(code)
        if self.dtype is DType.BOOL:
            if isinstance(raw, str):
                low = raw.strip().lower()
                if low in ("true", "1", "yes", "y", "t"):
                    return 1.0
                if low in ("false", "0", "no", "n", "f"):
                    return 0.0
                return math.nan
            return 1.0 if raw else 0.0
        try:
            value = float(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return math.nan
        if self.dtype is DType.INT and math.isfinite(value):
            value = float(math.floor(value))
        return value

    @cached_property
    def default_encoded(self) -> float:
        return self.encode_raw(self.default)

    def encode(self, raw: object) -> float:
        """Encode a value, imputing the schema default for a missing or invalid one."""
        value = self.encode_raw(raw)
        return self.default_encoded if math.isnan(value) else value

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "dtype": self.dtype.value,
            "source": self.source.value,
            "default": self.default,
            "max_age_s": self.max_age_s,
        }
        if self.vocabulary:
            out["vocabulary"] = list(self.vocabulary)
        return out


@dataclass(frozen=True)
class FeatureSchema:
    features: tuple[FeatureSpec, ...]
    name: str = "default"

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for f in self.features:
            if f.name in seen:
                raise SchemaError(f"feature {f.name!r}: defined twice")
            seen.add(f.name)

    @classmethod
    def from_yaml(cls, path: str | Path) -> FeatureSchema:
        with open(path, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh)
        return cls.from_dict(doc)

    @classmethod
    def from_dict(cls, doc: object) -> FeatureSchema:
        if not isinstance(doc, Mapping) or not isinstance(doc.get("features"), Sequence):
            raise SchemaError("schema: expected a mapping with a 'features' list")
        specs = tuple(_parse_feature(i, raw) for i, raw in enumerate(doc["features"]))
        if not specs:
            raise SchemaError("schema: 'features' is empty")
        return cls(features=specs, name=str(doc.get("name", "default")))

    @cached_property
    def hash(self) -> str:
        """Stable 16-hex-char hash of everything that changes the model input."""
        canonical = json.dumps([f.to_dict() for f in self.features], sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @cached_property
    def hash_bytes(self) -> bytes:
        return bytes.fromhex(self.hash)[:8]

    @cached_property
    def column_names(self) -> list[str]:
        return [f.name for f in self.features]

    @cached_property
    def _index(self) -> dict[str, int]:
        return {f.name: i for i, f in enumerate(self.features)}

    def index(self, name: str) -> int:
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(f"unknown feature {name!r}") from None

    def get(self, name: str) -> FeatureSpec | None:
        i = self._index.get(name)
        return None if i is None else self.features[i]

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def of(self, source: Source) -> tuple[FeatureSpec, ...]:
        return tuple(f for f in self.features if f.source is source)

    def columns_of(self, source: Source) -> list[int]:
        """Model column indices of the features of one source, in schema order."""
        return [i for i, f in enumerate(self.features) if f.source is source]


def _parse_feature(i: int, raw: object) -> FeatureSpec:
    if not isinstance(raw, Mapping):
        raise SchemaError(f"features[{i}]: expected a mapping, got {type(raw).__name__}")
    name = raw.get("name")
    where = f"feature {name!r}" if name else f"features[{i}]"
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise SchemaError(f"{where}: 'name' must match {_NAME_RE.pattern}")
    unknown = set(raw) - {
        "name", "dtype", "source", "default", "max_age", "vocabulary", "description",
    }
    if unknown:
        raise SchemaError(f"{where}: unknown field(s) {sorted(unknown)}")
    try:
        dtype = DType(raw.get("dtype", "float"))
    except ValueError:
        raise SchemaError(f"{where}: 'dtype' must be one of {[d.value for d in DType]}") from None
    try:
        source = Source(raw.get("source", "batch"))
    except ValueError:
        raise SchemaError(f"{where}: 'source' must be one of {[s.value for s in Source]}") from None
    try:
        max_age = parse_duration(raw.get("max_age"))
    except ValueError as exc:
        raise SchemaError(f"{where}: 'max_age': {exc}") from None
    vocab_raw = raw.get("vocabulary", ())
    if dtype is DType.CATEGORICAL:
        if not isinstance(vocab_raw, Sequence) or isinstance(vocab_raw, str) or not vocab_raw:
            raise SchemaError(f"{where}: a categorical feature needs a non-empty 'vocabulary' list")
        vocabulary = tuple(str(v) for v in vocab_raw)
        if len(set(vocabulary)) != len(vocabulary):
            raise SchemaError(f"{where}: 'vocabulary' has duplicates")
    elif vocab_raw:
        raise SchemaError(f"{where}: 'vocabulary' is only for categorical features")
    else:
        vocabulary = ()
    default = raw.get("default")
    spec = FeatureSpec(
        name=name,
        dtype=dtype,
        source=source,
        default=default,
        max_age_s=max_age,
        vocabulary=vocabulary,
        description=str(raw.get("description", "")),
    )
    if default is not None and math.isnan(spec.encode_raw(default)):
        raise SchemaError(f"{where}: 'default' {default!r} is not a valid {dtype.value}")
    return spec
