"""Explanations and exploration over the wire: every candidate's fate and detail, P/C/V/L,
LightGBM pred_contrib of the served actions, exploration and control-group flags."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import lightgbm as lgb
import numpy as np
import pytest
import pytest_asyncio
import yaml

from features.encoding import RowEncoder, encode_batch_values, encode_realtime_values
from features.schema import FeatureSchema
from nba_service._proto.nba.v1 import decisioning_pb2_grpc
from nba_service.client import build_request
from nba_service.engine.catalog import Catalog
from nba_service.engine.reasons import Stage
from nba_service.runtime import Runtime
from nba_service.server import NbaServer
from nba_service.settings import Settings
from nba_service.store.embedded import EmbeddedRedis

from .conftest import EXAMPLES

pytestmark = pytest.mark.integration

RULES = {Stage.RULE_ELIGIBILITY: "eligibility", Stage.RULE_APPLICABILITY: "applicability",
         Stage.RULE_SUITABILITY: "suitability"}


@pytest_asyncio.fixture(scope="module")
async def explore_stub(
    server_store: EmbeddedRedis, model_artifact: Path, tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[decisioning_pb2_grpc.DecisioningStub]:
    """A server whose catalog explores heavily: uniform on WEB sidebar, all-control on BRANCH."""
    doc = yaml.safe_load((EXAMPLES / "catalog.yaml").read_text(encoding="utf-8"))
    doc["exploration"] = {
        "default": {"method": "greedy"},
        "control_group": {"period": "month", "treatment": "random"},
        "overrides": [
            {"channel": "WEB", "placement": "sidebar", "method": "epsilon_greedy",
             "epsilon": 1.0},
            {"channel": "MOBILE_APP", "method": "thompson", "prior_strength": 2, "draws": 64},
            {"channel": "BRANCH", "control_share": 1.0},
        ],
    }
    path = tmp_path_factory.mktemp("explore") / "catalog.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    settings = Settings(host="127.0.0.1", port=0, redis_url=server_store.url,
                        model_path=model_artifact, catalog=path, catalog_watch_interval_s=0)
    server = NbaServer(settings, Runtime(settings))
    address = await server.start()
    try:
        async with grpc.aio.insecure_channel(address.target) as ch:
            yield decisioning_pb2_grpc.DecisioningStub(ch)
    finally:
        await server.stop(grace=0.1)


async def test_every_candidate_has_its_stage_detail_and_components(
    stub: decisioning_pb2_grpc.DecisioningStub, demo_catalog: Catalog,
    demo_customers: list[dict[str, object]],
) -> None:
    stages_seen: set[str] = set()
    for customer in demo_customers[:12]:
        resp = await stub.Decide(build_request(str(customer["customer_id"]), "CALL_CENTRE",
                                               limit=3, explain=True), timeout=5)
        served = {r.action_id: r for r in resp.recommendations}
        for c in resp.explanation.candidates:
            action = demo_catalog.actions[demo_catalog.index_of(c.action_id)]
            assert c.detail, (c.action_id, c.removed_by)
            if c.removed_by == "":
                assert c.action_id in served and c.rank == served[c.action_id].rank
                assert "selection probability 1" in c.detail
                continue
            assert c.rank == 0
            stages_seen.add(c.removed_by)
            stage = Stage[c.removed_by]
            if stage in RULES:
                # Names the rule kind and quotes the catalog's exact expression.
                assert c.detail == f"{RULES[stage]}: {getattr(action, RULES[stage])}"
            elif stage is Stage.RANK_CUTOFF:
                assert f"priority {c.priority:.6g}" in c.detail
            elif stage is Stage.GROUP_LIMIT:
                assert action.group in c.detail
            if all(math.isfinite(v) for v in (c.propensity, c.value)):
                assert c.priority == pytest.approx(
                    c.propensity * c.context_weight * c.value * c.lever)
    assert "RULE_ELIGIBILITY" in stages_seen and "RANK_CUTOFF" in stages_seen


async def test_contributions_are_lightgbm_pred_contrib_of_the_served_rows(
    stub: decisioning_pb2_grpc.DecisioningStub, demo_catalog: Catalog,
    demo_schema: FeatureSchema, demo_customers: list[dict[str, object]], model_artifact: Path,
) -> None:
    customer = demo_customers[4]
    ctx = {"page_type": "product", "hour_of_day": 10}
    resp = await stub.Decide(build_request(str(customer["customer_id"]), "WEB", "hero", ctx, 4,
                                           explain=True), timeout=5)
    assert resp.recommendations
    booster = lgb.Booster(model_file=str(model_artifact / "model.txt"))
    encoder = RowEncoder(demo_schema, [a.attributes() for a in demo_catalog.actions])
    row = encoder.customer_row(encode_batch_values(demo_schema, customer),
                               encode_realtime_values(demo_schema, {}), {**ctx, "channel": "WEB"})
    names = demo_schema.column_names
    by_action = {a.action_id: a.top for a in resp.explanation.contributions}
    assert set(by_action) == {r.action_id for r in resp.recommendations}
    for r in resp.recommendations:
        x = encoder.encode(row, np.array([demo_catalog.index_of(r.action_id)]))
        contrib = booster.predict(x, pred_contrib=True)[0][:-1]
        expected = np.argsort(-np.abs(contrib), kind="stable")[:5]
        top = by_action[r.action_id]
        assert len(top) == 5
        got = {t.feature: t.contribution for t in top}
        assert set(got) == {names[j] for j in expected}
        for j in expected:
            assert got[names[j]] == pytest.approx(contrib[j], abs=1e-9)
        mags = [abs(t.contribution) for t in top]
        assert mags == sorted(mags, reverse=True)


async def test_epsilon_greedy_over_the_wire_records_exact_probabilities(
    explore_stub: decisioning_pb2_grpc.DecisioningStub, demo_customers: list[dict[str, object]],
) -> None:
    explored = 0
    for customer in demo_customers[:10]:
        resp = await explore_stub.Decide(build_request(
            str(customer["customer_id"]), "WEB", "sidebar", limit=3, explain=True), timeout=5)
        kept = [c for c in resp.explanation.candidates if c.removed_by in
                ("", "RANK_CUTOFF", "GROUP_LIMIT")]
        recs = [r for r in resp.recommendations if "MANDATORY" not in r.reason_codes]
        for j, r in enumerate(recs):
            # eps = 1: slot j picks uniformly among what is left, so 1/m with m <= kept - j.
            m = round(1 / r.selection_probability)
            assert r.selection_probability == pytest.approx(1 / m)
            assert 1 <= m <= len(kept) - j
            assert r.reason_codes[0] == "ELIGIBLE"
            assert r.reason_codes[1] in ("EXPLORATION", "TOP_PRIORITY")
            explored += r.reason_codes[1] == "EXPLORATION"
        served = {c.action_id: c for c in resp.explanation.candidates if c.removed_by == ""}
        assert set(served) == {r.action_id for r in resp.recommendations}
        for r in recs:
            assert f"selection probability {r.selection_probability:.4g}" in \
                served[r.action_id].detail
    assert explored > 0


async def test_thompson_and_the_control_group_over_the_wire(
    explore_stub: decisioning_pb2_grpc.DecisioningStub, demo_customers: list[dict[str, object]],
) -> None:
    probabilities: list[float] = []
    for customer in demo_customers[:10]:
        cid = str(customer["customer_id"])
        resp = await explore_stub.Decide(build_request(cid, "MOBILE_APP", limit=2), timeout=5)
        for r in resp.recommendations:
            if "MANDATORY" not in r.reason_codes:
                assert 1 / 65 <= r.selection_probability <= 1.0
                probabilities.append(r.selection_probability)
        control = await explore_stub.Decide(build_request(cid, "BRANCH", limit=2,
                                                          explain=True), timeout=5)
        for r in control.recommendations:
            if r.reason_codes == ["ELIGIBLE", "MANDATORY"]:
                assert r.selection_probability == 1.0
                continue
            assert r.reason_codes == ["ELIGIBLE", "CONTROL_GROUP"]
            assert 0 < r.selection_probability <= 1.0
        others = [c for c in control.explanation.candidates if c.removed_by == "CONTROL_GROUP"]
        for c in others:
            assert c.detail == "the customer is in the random control group"
    # A weak prior (n = 2) makes the sampled slate uncertain for some customers.
    assert any(p < 1.0 for p in probabilities)
