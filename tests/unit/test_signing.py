"""Ed25519 signatures of model artifacts, checked before anything of the artifact is parsed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nba_service.scoring.artifact import MANIFEST_FILE, ArtifactError
from nba_service.security.commands import add_security_commands
from nba_service.security.signing import (
    SIGNATURE_FILE,
    generate_keypair,
    load_private_key,
    load_public_key,
    sign_artifact,
    verify_artifact,
)


def artifact(tmp_path: Path) -> Path:
    d = tmp_path / "model"
    d.mkdir()
    (d / MANIFEST_FILE).write_text(json.dumps({"model_version": "v1", "files": {}}))
    return d


def test_sign_then_verify(tmp_path: Path) -> None:
    private, public = generate_keypair()
    d = artifact(tmp_path)
    sign_artifact(d, load_private_key(private))
    verify_artifact(d, load_public_key(public))


def test_tampered_manifest_is_refused(tmp_path: Path) -> None:
    private, public = generate_keypair()
    d = artifact(tmp_path)
    sign_artifact(d, load_private_key(private))
    (d / MANIFEST_FILE).write_text(json.dumps({"model_version": "v2", "files": {}}))
    with pytest.raises(ArtifactError, match="signature does not match"):
        verify_artifact(d, load_public_key(public))


def test_signature_by_another_key_is_refused(tmp_path: Path) -> None:
    private, _ = generate_keypair()
    _, other_public = generate_keypair()
    d = artifact(tmp_path)
    sign_artifact(d, load_private_key(private))
    with pytest.raises(ArtifactError, match="signature does not match"):
        verify_artifact(d, load_public_key(other_public))


@pytest.mark.parametrize(
    ("content", "match"), [(None, "missing"), (b"!!not base64!!", "not base64")]
)
def test_missing_or_garbled_signature_is_refused(
    tmp_path: Path, content: bytes | None, match: str
) -> None:
    _, public = generate_keypair()
    d = artifact(tmp_path)
    if content is not None:
        (d / SIGNATURE_FILE).write_bytes(content)
    with pytest.raises(ArtifactError, match=match):
        verify_artifact(d, load_public_key(public))


def test_keys_of_another_type_are_refused() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    k = ec.generate_private_key(ec.SECP256R1())
    pem = k.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(ValueError, match="Ed25519"):
        load_public_key(pem)


def test_cli_keygen_sign_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    p = argparse.ArgumentParser()
    add_security_commands(p.add_subparsers(dest="cmd"))
    d = artifact(tmp_path)
    prefix = str(tmp_path / "k")

    def run(*argv: str) -> int:
        args = p.parse_args(list(argv))
        return int(args.func(args))

    assert run("model", "keygen", prefix) == 0
    assert (Path(prefix + ".key").stat().st_mode & 0o077) == 0  # private key not world-readable
    assert run("model", "sign", str(d), "--key", prefix + ".key") == 0
    assert run("model", "verify", str(d), "--key", prefix + ".pub") == 0
    (d / MANIFEST_FILE).write_text("{}")
    assert run("model", "verify", str(d), "--key", prefix + ".pub") == 1
    assert "signature does not match" in capsys.readouterr().err
