"""The model matrix: one encoder shared by training and serving.

Training builds its rows with `encode_rows`, which goes through the very same `RowEncoder`
methods the service calls on the hot path, so a training row and a serving row for the same
inputs are byte-identical by construction (tests/unit/test_encoding.py proves it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from features.schema import FeatureSchema, FeatureSpec, Source

__all__ = [
    "RowEncoder",
    "encode_batch_values",
    "encode_realtime_values",
    "encode_rows",
    "encode_source_values",
]


def encode_source_values(
    schema: FeatureSchema, source: Source, values: Mapping[str, object]
) -> np.ndarray:
    """Raw values of one source's features -> float32 vector in schema order.

    Missing or invalid values become the encoded default (NaN when the default is None).
    """
    specs = schema.of(source)
    out = np.empty(len(specs), dtype=np.float32)
    for i, spec in enumerate(specs):
        out[i] = spec.encode(values.get(spec.name))
    return out


def encode_batch_values(schema: FeatureSchema, values: Mapping[str, object]) -> np.ndarray:
    """Raw dict -> float32 vector of the BATCH features (what `features.packing` stores)."""
    return encode_source_values(schema, Source.BATCH, values)


def encode_realtime_values(schema: FeatureSchema, values: Mapping[str, object]) -> np.ndarray:
    """Raw dict -> float32 vector of the REALTIME features."""
    return encode_source_values(schema, Source.REALTIME, values)


def _action_attribute(spec: FeatureSpec, attrs: Mapping[str, object]) -> object:
    # Catalogs name attributes plainly (`type`, `group`, `value`, `id`) while schemas prefix
    # action features (`action_type`) so they cannot collide with customer features; accept both.
    if spec.name in attrs:
        return attrs[spec.name]
    short = spec.name.removeprefix("action_")
    return attrs.get(short)


class RowEncoder:
    """Builds the model matrix: one customer x N candidate actions, training column order."""

    def __init__(
        self, schema: FeatureSchema, action_attributes: Sequence[Mapping[str, object]]
    ) -> None:
        self.schema = schema
        self.n_columns = len(schema.features)
        self.n_actions = len(action_attributes)
        self._batch_cols = np.asarray(schema.columns_of(Source.BATCH), dtype=np.intp)
        self._realtime_cols = np.asarray(schema.columns_of(Source.REALTIME), dtype=np.intp)
        self._context = [
            (spec, schema.index(spec.name)) for spec in schema.of(Source.CONTEXT)
        ]
        action_specs = schema.of(Source.ACTION)
        self._action_cols = [schema.index(spec.name) for spec in action_specs]
        # Column-major so that each action feature is one contiguous array: `np.take` per column
        # then writes straight into the caller's matrix without a temporary block.
        block = np.empty((len(action_specs), self.n_actions), dtype=np.float32)
        for a, attrs in enumerate(action_attributes):
            for j, spec in enumerate(action_specs):
                block[j, a] = spec.encode(_action_attribute(spec, attrs))
        self._action_block = block
        ids: dict[str, int] = {}
        for a, attrs in enumerate(action_attributes):
            action_id = attrs.get("id", attrs.get("action_id"))
            if action_id is not None:
                ids.setdefault(str(action_id), a)
        self._action_ids = ids

    @property
    def action_block(self) -> np.ndarray:
        """(n_actions, n_action_features) float32: the encoded ACTION features of each action."""
        return self._action_block.T.copy()

    def action_index(self, action_id: str) -> int:
        """Catalog position of an action id (the value `encode` expects in `candidates`)."""
        try:
            return self._action_ids[action_id]
        except KeyError:
            raise KeyError(f"unknown action id {action_id!r}") from None

    def customer_row(
        self, batch: np.ndarray, realtime: np.ndarray, context: Mapping[str, object]
    ) -> np.ndarray:
        """The part shared by all candidate rows; ACTION columns are left NaN."""
        if batch.shape != self._batch_cols.shape:
            raise ValueError(
                f"batch vector has shape {batch.shape}, schema {self.schema.name!r} "
                f"has {len(self._batch_cols)} batch features"
            )
        if realtime.shape != self._realtime_cols.shape:
            raise ValueError(
                f"realtime vector has shape {realtime.shape}, schema {self.schema.name!r} "
                f"has {len(self._realtime_cols)} realtime features"
            )
        row = np.full(self.n_columns, np.nan, dtype=np.float32)
        row[self._batch_cols] = batch
        row[self._realtime_cols] = realtime
        for spec, col in self._context:
            row[col] = spec.encode(context.get(spec.name))
        return row

    def encode(
        self, customer_row: np.ndarray, candidates: np.ndarray, out: np.ndarray | None = None
    ) -> np.ndarray:
        """(len(candidates), n_columns) float32 matrix; candidates are catalog action indices.

        `out` may be a preallocated (m, n_columns) float32 C-contiguous matrix with m >= N; the
        first N rows are filled and returned as a view, so the hot path allocates nothing.
        """
        n = len(candidates)
        if customer_row.shape != (self.n_columns,):
            raise ValueError(
                f"customer_row has shape {customer_row.shape}, expected ({self.n_columns},)"
            )
        if n and (int(candidates.min()) < 0 or int(candidates.max()) >= self.n_actions):
            bad = candidates[(candidates < 0) | (candidates >= self.n_actions)]
            raise IndexError(
                f"candidate action index {int(bad[0])} out of range (catalog has "
                f"{self.n_actions} actions)"
            )
        if out is None:
            out = np.empty((n, self.n_columns), dtype=np.float32)
        elif (
            out.dtype != np.float32
            or out.ndim != 2
            or out.shape[1] != self.n_columns
            or out.shape[0] < n
        ):
            raise ValueError(
                f"out must be float32 (>= {n}, {self.n_columns}), got {out.dtype} {out.shape}"
            )
        rows = out[:n]
        rows[...] = customer_row
        for j, col in enumerate(self._action_cols):
            rows[:, col] = self._action_block[j].take(candidates)
        return rows


def encode_rows(
    schema: FeatureSchema,
    encoder: RowEncoder,
    records: Iterable[Mapping[str, object]],
    action_key: str = "action_id",
) -> np.ndarray:
    """Training side: raw records -> model rows, through the serving code path.

    Each record holds the raw values of the customer's BATCH and REALTIME features, the request
    context (including `channel`) and, under `action_key`, the catalog id of the action (or its
    integer catalog index). Rows are returned in record order as an (N, n_columns) float32 matrix.
    """
    rows: list[np.ndarray] = []
    candidate = np.empty(1, dtype=np.intp)
    for n, record in enumerate(records):
        action = record.get(action_key)
        if action is None:
            raise KeyError(f"record {n}: no {action_key!r}")
        candidate[0] = (
            int(action)
            if isinstance(action, int | np.integer)
            else encoder.action_index(str(action))
        )
        batch = encode_batch_values(schema, record)
        realtime = encode_realtime_values(schema, record)
        customer = encoder.customer_row(batch, realtime, record)
        rows.append(encoder.encode(customer, candidate)[0].copy())
    if not rows:
        return np.empty((0, encoder.n_columns), dtype=np.float32)
    return np.stack(rows)
