"""All configuration in one object. Nothing else in the service reads the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

_EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


class Settings(BaseSettings):
    """Service settings, read from `NBA_*` environment variables (and overridable by the CLI)."""

    model_config = SettingsConfigDict(env_prefix="NBA_", extra="ignore")

    host: str = "127.0.0.1"
    """Interface the gRPC server binds to."""
    port: int = Field(default=50051, ge=0, le=65535)
    """gRPC port; 0 picks a free one (the bound port is logged and returned by start())."""
    http_host: str | None = None
    """Interface of the HTTP/JSON gateway (demo page, inspector, /healthz); unset: `host`."""
    http_port: int | None = Field(default=None, ge=-1, le=65535)
    """HTTP/JSON gateway port. Unset: 8080, or a free port when `port` is 0; 0 picks a free
    one; -1 turns the gateway off."""
    http_cors_origins: list[str] = Field(default_factory=list)
    """Browser origins allowed to call /v1/* cross-origin, e.g. ["https://shop.example"]
    (JSON list in NBA_HTTP_CORS_ORIGINS); "*" allows any. Empty: same-origin only."""
    http_demo_pages: bool = True
    """Serve the demo product page (/demo) and the decision inspector page (/inspector)."""
    redis_url: str | None = None
    """Online store, e.g. redis://host:6379/0 or unix:///path.sock. Unset: an embedded server."""
    redis_timeout_s: float = Field(default=0.25, gt=0)
    """Socket timeout of store calls, so a slow store cannot hold a request forever."""
    feature_schema: Path = _EXAMPLES / "features.yaml"
    """The feature schema YAML: the model's column order and every feature's type and default."""
    catalog: Path = _EXAMPLES / "catalog.yaml"
    """The action catalog YAML."""
    catalog_watch_interval_s: float = Field(default=2.0, ge=0)
    """How often the catalog file is checked for changes (hot reload); 0 disables watching."""
    model_registry: Path | None = None
    """Registry directory (<slot>/current + versions/); the service serves its current version."""
    model_path: Path | None = None
    """A single model artifact directory to serve, instead of a registry."""
    model_slot: str = "propensity"
    """Registry slot whose current version is served."""
    model_watch_interval_s: float = Field(default=1.0, ge=0)
    """How often the registry's `current` pointers are read for a new version; 0 disables."""
    scoring_backend: Literal["auto", "compiled", "onnx", "lightgbm"] = "auto"
    """Model backend; `auto` is the fastest one that passes parity on each loaded model."""
    challenger_slot: str | None = None
    """Registry slot of a challenger model (needs model_registry); unset: champion only."""
    challenger_share: float = Field(default=0.0, ge=0, le=1)
    """Share of customers (stable per customer id) routed to the challenger."""
    challenger_shadow: bool = False
    """Shadow mode: the challenger scores its share of customers but the champion serves."""
    score_inline_max_us: float = Field(default=200.0, ge=0)
    """Scores estimated to cost at most this run inline on the event loop, bigger ones on a
    scoring thread (the thread hop costs tens of microseconds: docs/scoring.md)."""
    scoring_threads: int = Field(default=2, ge=0, le=64)
    """Threads for offloaded scoring; 0 scores everything inline."""
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
    decision_log: bool = True
    """Log every decision (after the response) and write its per-decision record; off, outcomes
    that name a decision_id cannot be verified and get NOT_FOUND."""
    decision_log_queue: int = Field(default=10_000, ge=1)
    """Decisions waiting to be logged; when full, new entries are dropped and counted."""
    decision_log_batch: int = Field(default=256, ge=1)
    """Most log entries written in one pipeline by the background writer."""
    decision_log_linger_ms: float = Field(default=2.0, ge=0, le=1000)
    """How long the writer waits after a first entry for more before it writes: the response
    goes out first, and under load one pipeline carries many entries."""
    decision_log_maxlen: int = Field(default=1_000_000, ge=1000)
    """Approximate cap on the decision stream (XADD MAXLEN ~); export more often than it fills."""
    outcome_log_maxlen: int = Field(default=1_000_000, ge=1000)
    """Approximate cap on the outcome stream (XADD MAXLEN ~)."""
    decision_log_settle_ms: int = Field(default=1000, ge=0)
    """How long RecordOutcome waits for a young decision's record written by another process."""
    shutdown_grace_s: float = Field(default=5.0, ge=0)
    """Time in-flight RPCs get to finish on shutdown."""
    workers: int = Field(default=1, ge=0, le=256)
    """Server processes sharing the port (SO_REUSEPORT) under one supervisor; 0 = one per core."""
    log_level: str = "INFO"
    """Root log level."""

    # -- reliability (docs/operations.md) ------------------------------------------------
    max_in_flight: int = Field(default=256, ge=1)
    """Requests served at once per process; more get RESOURCE_EXHAUSTED before being parsed."""
    max_pending: int = Field(default=0, ge=0)
    """Calls gRPC may hold for the application before it picks them up; beyond that gRPC's core
    refuses them with RESOURCE_EXHAUSTED before any Python runs. 0 (default): gRPC's own
    limits. The queue the in-flight count cannot see (docs/operations.md)."""
    max_loop_lag_s: float = Field(default=0.0, ge=0)
    """Event-loop lag above which only a quarter of max_in_flight is admitted (calls then
    queue where the in-flight count cannot see them); 0 (default) turns the monitor off."""
    max_deadline_s: float = Field(default=1.0, gt=0)
    """Longest a Decisioning RPC may run, whatever deadline the client sent (or none)."""
    admin_max_deadline_s: float = Field(default=30.0, gt=0)
    """Longest an Admin RPC (reloads load and verify artifacts) may run."""
    deadline_reserve_s: float = Field(default=0.01, ge=0)
    """Part of a request's deadline kept back from the store call for the fallback answer."""
    drain_s: float = Field(default=0.0, ge=0)
    """On SIGTERM, time between health NOT_SERVING and closing the port, for load balancers
    to notice (a few seconds behind a Kubernetes Service)."""
    breaker_window_s: int = Field(default=10, ge=1)
    """Sliding window (seconds) of the store circuit breaker's error rate."""
    breaker_min_calls: int = Field(default=20, ge=1)
    """Store calls the window must hold before the breaker may open."""
    breaker_error_rate: float = Field(default=0.5, gt=0, le=1)
    """Failure share in the window that opens the breaker."""
    breaker_open_s: float = Field(default=1.0, gt=0)
    """How long an open breaker fails fast before half-open probes."""
    breaker_probes: int = Field(default=3, ge=1)
    """Successful half-open probes that close the breaker."""

    # -- security (docs/security.md) ----------------------------------------------------
    tls_cert: Path | None = None
    """PEM server certificate (chain); with tls_key, the gRPC port speaks TLS only."""
    tls_key: Path | None = None
    """PEM private key of tls_cert."""
    tls_client_ca: Path | None = None
    """PEM CA bundle; when set, clients must present a certificate it signed (mTLS)."""
    http_tls: bool = False
    """Serve the HTTP port (gateway, pages, /metrics, /healthz) over TLS with tls_cert /
    tls_key, and with tls_client_ca require client certificates there too."""
    auth_tokens_file: Path | None = None
    """YAML of token hashes and their scopes (RPCs, channels); unset: no token auth."""
    redis_username: str | None = None
    """Redis ACL user (AUTH username password); may also be given in the URL."""
    redis_password: SecretStr | None = None
    """Redis password (AUTH); never logged."""
    redis_ca_cert: Path | None = None
    """CA bundle to verify a rediss:// server with (default: the system roots)."""
    redis_client_cert: Path | None = None
    """Client certificate for rediss:// servers that require one."""
    redis_client_key: Path | None = None
    """Private key of redis_client_cert."""
    model_public_key: Path | None = None
    """Ed25519 public key (PEM); when set, every model artifact must carry a valid
    manifest.sig, checked before anything of the artifact is parsed."""
    pseudonym_key: SecretStr | None = None
    """Key of the keyed hash that replaces customer ids in logs; unset: random per process."""

    # -- observability ----------------------------------------------------------------------
    log_format: Literal["text", "json"] = "text"
    """`json`: one JSON object per log line (ts, level, logger, msg, exc)."""
    tracing: bool = False
    """OpenTelemetry spans per RPC and stage (needs the `otel` extra)."""


def load_settings(**overrides: object) -> Settings:
    """Environment first, then explicit overrides (CLI flags), dropping overrides left as None."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
