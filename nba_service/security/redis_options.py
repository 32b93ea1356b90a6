"""Redis AUTH / ACL / TLS options from the settings, as redis-py client keyword arguments.

The URL may carry them too (`rediss://user:pass@host:6380/0`); explicit settings win, so a
password can come from a secret-mounted environment variable instead of a URL in a config map.
"""

from __future__ import annotations

from typing import Any

from nba_service.settings import Settings

__all__ = ["redis_client_kwargs"]


def redis_client_kwargs(settings: Settings) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    if settings.redis_username:
        kw["username"] = settings.redis_username
    if settings.redis_password is not None:
        kw["password"] = settings.redis_password.get_secret_value()
    url = settings.redis_url or ""
    tls_files = (settings.redis_ca_cert, settings.redis_client_cert, settings.redis_client_key)
    if any(tls_files) and not url.startswith("rediss://"):
        raise ValueError("redis_ca_cert / redis_client_cert / redis_client_key need a "
                         "rediss:// redis_url")
    if url.startswith("rediss://"):
        kw["ssl_cert_reqs"] = "required"
        if settings.redis_ca_cert:
            kw["ssl_ca_certs"] = str(settings.redis_ca_cert)
        if (settings.redis_client_cert is None) != (settings.redis_client_key is None):
            raise ValueError("redis_client_cert and redis_client_key go together")
        if settings.redis_client_cert and settings.redis_client_key:
            kw["ssl_certfile"] = str(settings.redis_client_cert)
            kw["ssl_keyfile"] = str(settings.redis_client_key)
    return kw
