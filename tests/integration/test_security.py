"""TLS / mTLS, token scopes on both ports, signed models, Redis ACL auth, and the log canary:
no customer id, feature value or token ever reaches a log line."""

from __future__ import annotations

import io
import json
import logging
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import pytest_asyncio
import redis

from nba_service._proto.nba.v1 import decisioning_pb2 as pb
from nba_service._proto.nba.v1 import decisioning_pb2_grpc
from nba_service.client import build_request
from nba_service.observability.logs import setup_logging
from nba_service.runtime import Runtime
from nba_service.security.auth import hash_token
from nba_service.security.pseudonym import Pseudonymizer
from nba_service.security.redis_options import redis_client_kwargs
from nba_service.security.signing import generate_keypair, load_private_key, sign_artifact
from nba_service.security.tls import channel_credentials
from nba_service.server import NbaServer
from nba_service.settings import Settings
from nba_service.store.embedded import EmbeddedRedis
from tests.certs import Pki

pytestmark = pytest.mark.integration

WIDGET, OPS = "widget-canary-token-5309", "ops-canary-token-8675"
SHOP = "https://shop.example"


async def decide_over(channel: grpc.aio.Channel) -> pb.DecideResponse:
    return await decisioning_pb2_grpc.DecisioningStub(channel).Decide(
        build_request("c1", "WEB"), timeout=5)


@pytest_asyncio.fixture(scope="module")
async def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


async def start(settings: Settings) -> NbaServer:
    s = NbaServer(settings, Runtime(settings))
    await s.start()
    return s


async def test_tls_only_server(server_store: EmbeddedRedis, model_artifact: Path,
                               pki: Pki) -> None:
    cert, key = pki.issue("tls-server", server=True)
    s = await start(Settings(port=0, http_port=-1, redis_url=server_store.url,
                             model_path=model_artifact, tls_cert=cert, tls_key=key))
    try:
        assert s.address is not None
        creds = channel_credentials(ca=pki.ca_path)
        async with grpc.aio.secure_channel(s.address.target, creds) as ch:
            assert (await decide_over(ch)).decision_id
        async with grpc.aio.insecure_channel(s.address.target) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await decide_over(ch)
            assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await s.stop(grace=0.1)


async def test_http_port_over_tls_and_mtls(server_store: EmbeddedRedis, model_artifact: Path,
                                           pki: Pki, tmp_path: Path) -> None:
    import ssl

    cert, key = pki.issue("https-server", server=True)
    client_cert, client_key = pki.issue("https-client", server=False)
    body = {"customerId": "C0000001", "channel": "WEB"}
    for mtls in (False, True):
        s = await start(Settings(port=0, http_port=0, redis_url=server_store.url,
                                 model_path=model_artifact, tls_cert=cert, tls_key=key,
                                 tls_client_ca=pki.ca_path if mtls else None, http_tls=True))
        try:
            assert s.http is not None and s.http.url.startswith("https://")
            trust = ssl.create_default_context(cafile=pki.ca_path)
            if mtls:
                trust.load_cert_chain(client_cert, client_key)
            async with aiohttp.ClientSession() as http:
                async with http.post(s.http.url + "/v1/decide", json=body, ssl=trust) as r:
                    assert r.status == 200 and (await r.json())["decisionId"]
                async with http.get(s.http.url + "/healthz", ssl=trust) as r:
                    assert r.status == 200
                # Plain HTTP on the TLS port gets no answer from the gateway.
                plain = s.http.url.replace("https://", "http://")
                with pytest.raises(aiohttp.ClientError):
                    async with http.get(plain + "/healthz") as r:
                        await r.read()
                if mtls:  # without a client certificate the handshake fails
                    with pytest.raises(aiohttp.ClientError):
                        async with http.get(s.http.url + "/healthz",
                                            ssl=ssl.create_default_context(
                                                cafile=pki.ca_path)) as r:
                            await r.read()
        finally:
            await s.stop(grace=0.1)
    # http_tls without a certificate is refused at start, with the reason.
    from nba_service.security.tls import TlsConfigError

    with pytest.raises(TlsConfigError, match="tls_cert and tls_key"):
        await start(Settings(port=0, http_port=0, redis_url=server_store.url,
                             model_path=model_artifact, http_tls=True))


async def test_mtls_requires_a_client_certificate_from_the_ca(
    server_store: EmbeddedRedis, model_artifact: Path, pki: Pki,
    tmp_path: Path,
) -> None:
    cert, key = pki.issue("mtls-server", server=True)
    client_cert, client_key = pki.issue("good-client", server=False)
    rogue = Pki(tmp_path / "rogue", name="rogue-ca")
    rogue_cert, rogue_key = rogue.issue("rogue-client", server=False)
    s = await start(Settings(port=0, http_port=-1, redis_url=server_store.url,
                             model_path=model_artifact, tls_cert=cert, tls_key=key,
                             tls_client_ca=pki.ca_path))
    try:
        assert s.address is not None
        good = channel_credentials(pki.ca_path, client_cert, client_key)
        async with grpc.aio.secure_channel(s.address.target, good) as ch:
            assert (await decide_over(ch)).decision_id
        for creds in (channel_credentials(pki.ca_path),
                      channel_credentials(pki.ca_path, rogue_cert, rogue_key)):
            async with grpc.aio.secure_channel(s.address.target, creds) as ch:
                with pytest.raises(grpc.aio.AioRpcError) as exc:
                    await decide_over(ch)
                assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await s.stop(grace=0.1)


@pytest_asyncio.fixture(scope="module")
async def authed(server_store: EmbeddedRedis, model_artifact: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[NbaServer]:
    tokens = tmp_path_factory.mktemp("tok") / "tokens.yaml"
    tokens.write_text(f"""tokens:
  - name: chat-widget
    sha256: {hash_token(WIDGET)}
    rpcs: [nba.v1.Decisioning/Decide, nba.v1.Decisioning/EvaluateChatTrigger,
           nba.v1.Decisioning/IngestEvents, nba.v1.Decisioning/RecordOutcome]
    channels: [CHAT, WEB]
  - name: ops
    sha256: {hash_token(OPS)}
    rpcs: ["nba.v1.Admin/*", "nba.v1.Decisioning/*"]
""")
    s = await start(Settings(port=0, http_port=0, redis_url=server_store.url,
                             model_path=model_artifact, auth_tokens_file=tokens,
                             http_cors_origins=[SHOP]))
    yield s
    await s.stop(grace=0.1)


async def test_browsers_get_cors_answers_with_auth_on(authed: NbaServer) -> None:
    # A preflight carries no credentials by design: it must pass auth to the CORS answer, and
    # a refusal must carry the CORS headers, or the page only sees an opaque network error.
    assert authed.http is not None
    base = authed.http.url
    async with aiohttp.ClientSession() as http:
        async with http.options(base + "/v1/decide", headers={
                "Origin": SHOP, "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type"}) as r:
            assert r.status == 204
            assert r.headers["Access-Control-Allow-Origin"] == SHOP
            assert "authorization" in r.headers["Access-Control-Allow-Headers"]
        async with http.post(base + "/v1/decide", json={"customerId": "c1", "channel": "WEB"},
                             headers={"Origin": SHOP}) as r:
            assert r.status == 401
            assert r.headers["Access-Control-Allow-Origin"] == SHOP
            assert (await r.json())["error"]["status"] == "UNAUTHENTICATED"
        async with http.post(base + "/v1/decide", json={"customerId": "c1", "channel": "WEB"},
                             headers={"Origin": "https://evil.example",
                                      "Authorization": f"Bearer {WIDGET}"}) as r:
            assert r.status == 200 and "Access-Control-Allow-Origin" not in r.headers


async def test_http_metrics_count_each_answer_under_its_status_code(authed: NbaServer) -> None:
    assert authed.http is not None
    base = authed.http.url
    w = {"Authorization": f"Bearer {WIDGET}"}
    async with aiohttp.ClientSession() as http:
        for body in ({"customerId": "", "channel": "WEB"},
                     {"customerId": "x" * 1000, "channel": "WEB"}):
            async with http.post(base + "/v1/decide", json=body, headers=w) as r:
                assert r.status == 400
        async with http.post(base + "/v1/decide", json={"customerId": "c1"}, headers={}) as r:
            assert r.status == 401
    text = authed.runtime.safeguards.metrics.exposition().decode()
    invalid = [line for line in text.splitlines() if line.startswith(
        'nba_rpc_duration_seconds_count{code="INVALID_ARGUMENT",method="Decide"}')]
    assert invalid and float(invalid[0].split()[-1]) >= 2


async def test_http_routes_use_the_same_token_scopes(authed: NbaServer) -> None:
    assert authed.http is not None
    base = authed.http.url
    w = {"Authorization": f"Bearer {WIDGET}"}
    o = {"Authorization": f"Bearer {OPS}"}
    async with aiohttp.ClientSession() as http:
        async def post(path: str, body: dict[str, Any], headers: dict[str, str]) -> int:
            async with http.post(base + path, json=body, headers=headers) as r:
                return r.status

        decide = {"customerId": "c1", "channel": "WEB"}
        assert await post("/v1/decide", decide, w) == 200
        assert await post("/v1/decide", decide, {}) == 401
        assert await post("/v1/decide", decide, {"Authorization": "Bearer forged"}) == 401
        assert await post("/v1/decide", {**decide, "channel": "CALL_CENTRE"}, w) == 403
        assert await post("/v1/inspect", decide, w) == 403  # the inspector is Admin data
        async with http.get(base + "/metrics", headers=w) as r:
            assert r.status == 403
        async with http.get(base + "/metrics", headers=o) as r:
            assert r.status == 200
            text = await r.text()
        assert "nba_rpc_duration_seconds_bucket" in text
        assert 'nba_decisions_total{channel="WEB",degraded="true"}' in text  # c1: cold start
        model = authed.runtime.models.model
        assert model is not None
        assert f'nba_model_version_info{{slot="{authed.runtime.models.slot}",' \
               f'version="{model.version}"}} 1.0' in text
        assert "nba_model_load_failures_total{slot=" in text
        assert "nba_catalog_version_info{version=" in text
        assert "nba_catalog_reload_failures_total 0.0" in text
        assert "nba_decision_stage_duration_seconds_bucket" in text
        async with http.get(base + "/healthz") as r:  # probes need no token
            assert r.status == 200


async def test_widget_token_cannot_reload_or_inspect_over_grpc(authed: NbaServer) -> None:
    assert authed.address is not None
    md = [("authorization", f"Bearer {WIDGET}")]
    async with grpc.aio.insecure_channel(authed.address.target) as ch:
        admin = decisioning_pb2_grpc.AdminStub(ch)
        for call, req in ((admin.ReloadModel, pb.ReloadModelRequest()),
                          (admin.ReloadCatalog, pb.ReloadCatalogRequest()),
                          (admin.Inspect, pb.InspectRequest(customer_id="c1", channel=pb.WEB))):
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await call(req, metadata=md, timeout=5)
            assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED
        ok = await admin.GetStatus(pb.GetStatusRequest(),
                                   metadata=[("authorization", f"Bearer {OPS}")], timeout=5)
        assert ok.ready


async def test_log_canary(authed: NbaServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests full of canaries, through success and error paths, at DEBUG: no canary in any
    log line; the customer id appears only as its pseudonym."""
    canary_id, canary_ctx, canary_num = "cust-canary-4711", "ctx-canary-0815", 98765.4321
    buf = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    pseudo = Pseudonymizer(b"canary-key")
    setup_logging("DEBUG", "json", pseudo, stream=buf)
    try:
        assert authed.address is not None
        md = [("authorization", f"Bearer {WIDGET}")]
        async with grpc.aio.insecure_channel(authed.address.target) as ch:
            stub = decisioning_pb2_grpc.DecisioningStub(ch)
            req = build_request(canary_id, "WEB", context={"intent": canary_ctx,
                                                           "cart_value": canary_num})
            await stub.Decide(req, metadata=md, timeout=5)
            await stub.IngestEvents(pb.IngestEventsRequest(
                customer_id=canary_id,
                events=[pb.Event(feature="cart_value", value=pb.Value(number_value=canary_num))],
            ), metadata=md, timeout=5)
            bad = build_request(canary_id, "WEB", context={canary_ctx: canary_ctx * 100})
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Decide(bad, metadata=md, timeout=5)

            async def leaky(r: Any) -> Any:
                raise RuntimeError(f"lost {r.customer_id} with {dict(r.context)} {WIDGET}")

            monkeypatch.setattr(authed.runtime, "decide", leaky)
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await stub.Decide(req, metadata=md, timeout=5)
            assert exc.value.code() == grpc.StatusCode.INTERNAL
        # The same over HTTP/JSON: the leaky decide, then a bad request.
        assert authed.http is not None
        hdr = {"Authorization": f"Bearer {WIDGET}"}
        body = {"customerId": canary_id, "channel": "WEB",
                "context": {"intent": {"stringValue": canary_ctx}}}
        async with aiohttp.ClientSession() as http:
            async with http.post(authed.http.url + "/v1/decide", json=body, headers=hdr) as r:
                assert r.status == 500
                assert canary_id not in await r.text()
            body["context"] = {canary_ctx: {"stringValue": canary_ctx * 100}}
            async with http.post(authed.http.url + "/v1/decide", json=body, headers=hdr) as r:
                assert r.status == 400
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    out = buf.getvalue()
    lines = [json.loads(line) for line in out.splitlines()]
    assert any(line["level"] == "ERROR" for line in lines)  # the INTERNAL was logged
    for canary in (canary_id, canary_ctx, str(canary_num), WIDGET):
        assert canary not in out, canary
    assert pseudo(canary_id) in out


async def test_signed_models_only_when_a_key_is_configured(
    server_store: EmbeddedRedis, model_artifact: Path, tmp_path: Path,
) -> None:
    private, public = generate_keypair()
    (tmp_path / "pub.pem").write_bytes(public)
    unsigned = tmp_path / "unsigned"
    shutil.copytree(model_artifact, unsigned)
    signed = tmp_path / "signed"
    shutil.copytree(model_artifact, signed)
    sign_artifact(signed, load_private_key(private))
    for path, loads in ((unsigned, False), (signed, True)):
        settings = Settings(port=0, redis_url=server_store.url, model_path=path,
                            model_public_key=tmp_path / "pub.pem", decision_log=False,
                            catalog_watch_interval_s=0)
        rt = Runtime(settings)
        await rt.start()
        try:
            assert (rt.models.model is not None) is loads
            if not loads:
                assert "manifest.sig" in (rt.models.last_error or "")
        finally:
            await rt.stop()


async def test_redis_acl_user_and_password(model_artifact: Path) -> None:
    with EmbeddedRedis() as store:
        admin = store.client()
        admin.execute_command("ACL", "SETUSER", "nba", "on", ">s3cret-pw", "~nba:*", "+@all")
        admin.execute_command("ACL", "SETUSER", "default", "off")
        admin.close()
        good = Settings(port=0, http_port=-1, redis_url=store.url, model_path=model_artifact,
                        redis_username="nba", redis_password="s3cret-pw",  # type: ignore[arg-type]
                        decision_log=False, catalog_watch_interval_s=0)
        s = await start(good)
        try:
            assert s.address is not None
            async with grpc.aio.insecure_channel(s.address.target) as ch:
                resp = await decide_over(ch)
            assert not any(r.startswith("fallback:") for r in resp.degraded_reasons)
        finally:
            await s.stop(grace=0.1)
        bad = good.model_copy(update={"redis_password": None})
        rt = Runtime(bad)
        with pytest.raises(redis.ConnectionError, match="username-password"):
            await rt.start()
        await rt.stop()
        assert "s3cret-pw" not in repr(good)


def test_rediss_options() -> None:
    s = Settings(redis_url="rediss://cache:6380/0", redis_ca_cert=Path("/ca.pem"),
                 redis_client_cert=Path("/c.crt"), redis_client_key=Path("/c.key"),
                 redis_username="u", redis_password="p")  # type: ignore[arg-type]
    kw = redis_client_kwargs(s)
    assert kw == {"username": "u", "password": "p", "ssl_cert_reqs": "required",
                  "ssl_ca_certs": "/ca.pem", "ssl_certfile": "/c.crt", "ssl_keyfile": "/c.key"}
    with pytest.raises(ValueError, match="rediss://"):
        redis_client_kwargs(Settings(redis_url="redis://x", redis_ca_cert=Path("/ca.pem")))
