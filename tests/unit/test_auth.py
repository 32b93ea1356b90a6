"""Token authority (scopes per RPC and channel), pseudonyms and the log redaction filter."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest

from nba_service._proto.nba.v1 import decisioning_pb2 as pb
from nba_service.security.auth import AuthError, TokenAuthority, hash_token, new_token
from nba_service.security.pseudonym import Pseudonymizer
from nba_service.security.redaction import RedactionFilter, register_request, register_token

WIDGET, OPS = "widget-token-123", "ops-token-456"


def tokens_file(tmp_path: Path) -> Path:
    p = tmp_path / "tokens.yaml"
    p.write_text(
        f"""
tokens:
  - name: chat-widget
    sha256: {hash_token(WIDGET)}
    rpcs: [nba.v1.Decisioning/Decide, nba.v1.Decisioning/EvaluateChatTrigger]
    channels: [CHAT, web]
  - name: ops
    sha256: {hash_token(OPS)}
    rpcs: ["nba.v1.Admin/*", "nba.v1.Decisioning/*"]
"""
    )
    return p


def test_scopes_by_rpc_service_wildcard_and_channel(tmp_path: Path) -> None:
    auth = TokenAuthority.from_file(tokens_file(tmp_path))
    widget = auth.check(f"Bearer {WIDGET}", "/nba.v1.Decisioning/Decide")
    assert widget.name == "chat-widget"
    assert widget.may_use_channel("CHAT") and widget.may_use_channel("WEB")
    assert not widget.may_use_channel("CALL_CENTRE")
    for method in ("/nba.v1.Admin/ReloadModel", "/nba.v1.Admin/Inspect",
                   "/nba.v1.Decisioning/IngestEvents"):
        with pytest.raises(AuthError) as exc:
            auth.check(f"Bearer {WIDGET}", method)
        assert exc.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert exc.value.http_status == 403
    ops = auth.check(f"bearer {OPS}", "/nba.v1.Admin/ReloadModel")
    assert ops.channels is None and ops.may_use_channel("ATM")


@pytest.mark.parametrize("header", [None, "", "Bearer", "Basic abc", "Bearer nope"])
def test_missing_or_unknown_tokens_are_unauthenticated(tmp_path: Path, header: str | None) -> None:
    auth = TokenAuthority.from_file(tokens_file(tmp_path))
    with pytest.raises(AuthError) as exc:
        auth.check(header, "/nba.v1.Decisioning/Decide")
    assert exc.value.code == grpc.StatusCode.UNAUTHENTICATED and exc.value.http_status == 401


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ("tokens: []", "non-empty list"),
        ("tokens: [{name: a, sha256: short, rpcs: [x/y]}]", "64 hex"),
        ("tokens: [{sha256: " + "a" * 64 + ", rpcs: [x/y]}]", "'name'"),
        ("tokens: [{name: a, sha256: " + "a" * 64 + ", rpcs: [Decide]}]", "rpcs"),
        ("tokens: [{name: a, sha256: " + "a" * 64 + ", rpcs: [x/y], channels: CHAT}]",
         "channels"),
        ("tokens: [{name: a, sha256: " + "a" * 64 + ", rpcs: [x/y]}, "
         "{name: b, sha256: " + "a" * 64 + ", rpcs: [x/y]}]", "twice"),
        ("tokens: [", "YAML"),
    ],
)
def test_bad_tokens_files_are_refused(tmp_path: Path, doc: str, match: str) -> None:
    p = tmp_path / "t.yaml"
    p.write_text(doc)
    with pytest.raises(ValueError, match=match):
        TokenAuthority.from_file(p)


def test_new_tokens_are_random_and_hashed() -> None:
    (t1, h1), (t2, h2) = new_token(), new_token()
    assert t1 != t2 and h1 != h2 and h1 == hash_token(t1) and len(h1) == 64 and t1 not in h1


def test_pseudonyms_are_keyed_and_stable() -> None:
    a, b = Pseudonymizer(b"k1"), Pseudonymizer(b"k2")
    assert a("cust-1") == a("cust-1") != a("cust-2")
    assert a("cust-1") != b("cust-1")
    assert "cust-1" not in a("cust-1")


def _record(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("t", logging.WARNING, __file__, 1, msg, args, None)


def test_redaction_of_request_values_ids_and_tokens() -> None:
    f = RedactionFilter(Pseudonymizer(b"k"))
    req = pb.DecideRequest(customer_id="cust-canary-77", channel=pb.WEB)
    req.context["intent"].string_value = "secret-intent-value"
    req.context["cart"].number_value = 1234.5678
    register_request(req)
    register_token("tok-canary-999")
    rec = _record("failed for %s with %s / %r and tok-canary-999, cart %s",
                  "cust-canary-77", "secret-intent-value", req, 1234.5678)
    assert f.filter(rec)
    out = rec.getMessage()
    for secret in ("cust-canary-77", "secret-intent-value", "tok-canary-999", "1234.5678"):
        assert secret not in out
    assert Pseudonymizer(b"k")("cust-canary-77") in out
    register_request(None)
    register_token(None)


def test_redaction_patterns_without_a_request() -> None:
    f = RedactionFilter(Pseudonymizer(b"k"))
    register_request(None)
    register_token(None)
    rec = _record("md %s url %s", [("authorization", "Bearer abc.def")],
                  "rediss://svc:hunter2@redis:6380/0")
    f.filter(rec)
    out = rec.getMessage()
    assert "abc.def" not in out and "hunter2" not in out and "rediss://svc:" in out


def test_redaction_covers_exception_text() -> None:
    f = RedactionFilter(Pseudonymizer(b"k"))
    req = pb.DecideRequest(customer_id="cust-in-traceback")
    register_request(req)
    try:
        raise RuntimeError("no data for cust-in-traceback")
    except RuntimeError:
        import sys

        rec = logging.LogRecord("t", logging.ERROR, __file__, 1, "boom", None, sys.exc_info())
    f.filter(rec)
    assert rec.exc_text and "cust-in-traceback" not in rec.exc_text
    assert "RuntimeError" in rec.exc_text
    register_request(None)
