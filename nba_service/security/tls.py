"""TLS and mutual TLS for the gRPC port and the HTTP port, from PEM files named in the settings."""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc

__all__ = ["TlsConfigError", "channel_credentials", "http_ssl_context", "server_credentials"]


class TlsConfigError(ValueError):
    """The TLS settings are incomplete or a file cannot be read."""


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsConfigError(f"{what} {path}: cannot read: {exc.strerror}") from None


def server_credentials(
    cert: Path | None, key: Path | None, client_ca: Path | None = None
) -> grpc.ServerCredentials | None:
    """None when TLS is off (no cert and no key). With `client_ca`, clients must present a
    certificate signed by it (mTLS); without, any client may connect over TLS."""
    if cert is None and key is None:
        if client_ca is not None:
            raise TlsConfigError("tls_client_ca is set but tls_cert/tls_key are not")
        return None
    if cert is None or key is None:
        raise TlsConfigError("set both tls_cert and tls_key (or neither)")
    pair = (_read(key, "tls_key"), _read(cert, "tls_cert"))
    if client_ca is None:
        return grpc.ssl_server_credentials([pair])
    return grpc.ssl_server_credentials(
        [pair], root_certificates=_read(client_ca, "tls_client_ca"), require_client_auth=True
    )


def channel_credentials(
    ca: Path | None = None, cert: Path | None = None, key: Path | None = None
) -> grpc.ChannelCredentials:
    """Client side: trust `ca` (None: the system roots); `cert` + `key` for mTLS."""
    if (cert is None) != (key is None):
        raise TlsConfigError("client certificate and key go together")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca, "ca") if ca else None,
        private_key=_read(key, "key") if key else None,
        certificate_chain=_read(cert, "cert") if cert else None,
    )


def http_ssl_context(
    cert: Path | None, key: Path | None, client_ca: Path | None = None
) -> ssl.SSLContext:
    """The HTTP port's TLS from the same files as the gRPC port's: TLS 1.2+, and with
    `client_ca` a client certificate it signed is required (mTLS)."""
    if cert is None or key is None:
        raise TlsConfigError("http_tls needs tls_cert and tls_key")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
        if client_ca is not None:
            ctx.load_verify_locations(cafile=client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(f"http_tls: cannot load {cert} / {key}: {exc}") from None
    return ctx
