"""Marketing consent per channel is an ordinary rule input: no consent, no offer on that channel."""

from __future__ import annotations

import numpy as np
import pytest

from features.encoding import RowEncoder, encode_batch_values, encode_realtime_values
from features.schema import FeatureSchema
from nba_service.engine.arbitration import Engine
from nba_service.engine.catalog import Catalog, load_catalog
from nba_service.engine.reasons import Stage

from ..conftest import EXAMPLES

# Qualifies for the Gold card on every rule but consent (see examples/catalog.yaml).
GOLD_PROSPECT = {"age": 35, "has_credit_card": False, "credit_score": 700, "income": 50_000,
                 "segment": "gold", "payment_overdue_days": 0, "clv": 2_000}


@pytest.fixture(scope="module")
def demo(demo_schema: FeatureSchema) -> tuple[Catalog, Engine, RowEncoder]:
    catalog = load_catalog(EXAMPLES / "catalog.yaml", demo_schema)
    encoder = RowEncoder(demo_schema, [a.attributes() for a in catalog.actions])
    return catalog, Engine(catalog, demo_schema), encoder


def _stage(demo: tuple[Catalog, Engine, RowEncoder], schema: FeatureSchema, channel: str,
           **consent: bool) -> Stage:
    catalog, engine, encoder = demo
    row = encoder.customer_row(encode_batch_values(schema, {**GOLD_PROSPECT, **consent}),
                               encode_realtime_values(schema, {}), {"channel": channel})
    candidates = engine.candidates_for(channel)
    gold = catalog.index_of("card_gold")
    assert gold in candidates.tolist()
    ranking = engine.rank(row, candidates, np.full(len(candidates), 0.5), channel,
                          {"channel": channel}, len(candidates))
    return ranking.stage(candidates.tolist().index(gold))


@pytest.mark.parametrize("consent", [False, True])
def test_email_offer_needs_email_consent(demo: tuple[Catalog, Engine, RowEncoder],
                                         demo_schema: FeatureSchema, consent: bool) -> None:
    stage = _stage(demo, demo_schema, "EMAIL", consent_email=consent)
    assert stage == (Stage.SERVED if consent else Stage.RULE_SUITABILITY)


def test_email_consent_does_not_gate_other_channels(demo: tuple[Catalog, Engine, RowEncoder],
                                                   demo_schema: FeatureSchema) -> None:
    assert _stage(demo, demo_schema, "WEB", consent_email=False) == Stage.SERVED
