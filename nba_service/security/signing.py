"""Ed25519 signatures over a model artifact's manifest.

The manifest lists the sha256 of every other file, so signing it signs the whole artifact.
`manifest.sig` holds the raw 64-byte signature, base64-encoded. When the service has a public
key configured, the signature is checked before the manifest is parsed, let alone the model.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from nba_service.scoring.artifact import MANIFEST_FILE, ArtifactError

__all__ = [
    "SIGNATURE_FILE",
    "generate_keypair",
    "load_private_key",
    "load_public_key",
    "sign_artifact",
    "verify_artifact",
]

SIGNATURE_FILE = "manifest.sig"


def generate_keypair() -> tuple[bytes, bytes]:
    """(private PEM, public PEM) of a new Ed25519 key."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("not an Ed25519 private key")
    return key


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


def sign_artifact(artifact_dir: str | Path, private_key: Ed25519PrivateKey) -> Path:
    """Write `manifest.sig` next to the manifest; returns its path."""
    root = Path(artifact_dir)
    signature = private_key.sign((root / MANIFEST_FILE).read_bytes())
    out = root / SIGNATURE_FILE
    out.write_bytes(base64.b64encode(signature) + b"\n")
    return out


def verify_artifact(artifact_dir: str | Path, public_key: Ed25519PublicKey) -> None:
    """Raise ArtifactError unless `manifest.sig` is a valid signature of `manifest.json`."""
    root = Path(artifact_dir)
    sig_path, manifest_path = root / SIGNATURE_FILE, root / MANIFEST_FILE
    try:
        encoded = sig_path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{sig_path}: missing (a signature is required)") from None
    except OSError as exc:
        raise ArtifactError(f"{sig_path}: cannot read: {exc.strerror}") from None
    try:
        signature = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ArtifactError(f"{sig_path}: not base64") from None
    try:
        manifest = manifest_path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{manifest_path}: cannot read: {exc.strerror}") from None
    try:
        public_key.verify(signature, manifest)
    except InvalidSignature:
        raise ArtifactError(
            f"{sig_path}: signature does not match {MANIFEST_FILE} under the configured key"
        ) from None
