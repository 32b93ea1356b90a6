"""All configuration in one object. Nothing else in the service reads the environment."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

_EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


class Settings(BaseSettings):
    """Service settings, read from `NBA_*` environment variables (and overridable by the CLI)."""

    model_config = SettingsConfigDict(env_prefix="NBA_", extra="ignore")

    host: str = "127.0.0.1"
    """Interface the gRPC server binds to."""
    port: int = Field(default=50051, ge=0, le=65535)
    """gRPC port; 0 picks a free one (the bound port is logged and returned by start())."""
    redis_url: str | None = None
    """Online store, e.g. redis://host:6379/0 or unix:///path.sock. Unset: an embedded server."""
    redis_timeout_s: float = Field(default=0.25, gt=0)
    """Socket timeout of store calls, so a slow store cannot hold a request forever."""
    feature_schema: Path = _EXAMPLES / "features.yaml"
    """The feature schema YAML: the model's column order and every feature's type and default."""
    catalog: Path = _EXAMPLES / "catalog.yaml"
    """The action catalog YAML."""
    model_registry: Path | None = None
    """Registry directory (<slot>/current + versions/); the service serves its current version."""
    model_path: Path | None = None
    """A single model artifact directory to serve, instead of a registry."""
    model_slot: str = "propensity"
    """Registry slot whose current version is served."""
    default_limit: int = Field(default=3, ge=1, le=100)
    """Number of actions returned when a request sets no limit."""
    max_limit: int = Field(default=25, ge=1, le=1000)
    """Largest limit a request may ask for."""
    max_context_entries: int = Field(default=64, ge=0)
    """Most context entries one request may carry."""
    max_string_len: int = Field(default=256, ge=8)
    """Longest customer id, placement, context key or string value accepted."""
    max_events_per_request: int = Field(default=256, ge=1)
    """Most real-time events one IngestEvents call may carry."""
    shutdown_grace_s: float = Field(default=5.0, ge=0)
    """Time in-flight RPCs get to finish on shutdown."""
    log_level: str = "INFO"
    """Root log level."""


def load_settings(**overrides: object) -> Settings:
    """Environment first, then explicit overrides (CLI flags), dropping overrides left as None."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
