"""The one settings object of the hub: every knob is an environment variable with prefix ``HUB_``."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Read once at start and passed down explicitly; no other module reads the environment."""

    model_config = SettingsConfigDict(env_prefix="HUB_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = "http://127.0.0.1:8080"
    country_code: str = "NL"
    party_id: str = "HUB"
    hub_name: str = "OCPI Hub"

    redis_url: str | None = None
    mongo_url: str | None = None
    mongo_db: str = "ocpi_hub"
    sqlite_path: str = ".hub-data/hub.sqlite3"
    key_prefix: str = "ocpi-hub"

    admin_token: str | None = None
    url: str = "http://127.0.0.1:8080"  # where the CLI finds a running hub (HUB_URL)

    forward_timeout: float = Field(5.0, gt=0, description="seconds a receiver has to answer a forwarded request")
    registration_timeout: float = Field(10.0, gt=0, description="seconds per call to a partner during registration")
    max_inflight_per_receiver: int = Field(32, ge=1)
    delivery_concurrency: int = Field(512, ge=1, description="deliveries one process runs at once")
    connections_per_receiver: int = Field(64, ge=1)

    broadcast_retry_window: float = Field(600.0, gt=0, description="seconds a fan-out delivery is retried")
    alive_interval: float = Field(300.0, gt=0, description="silence before a still-alive GET versions")
    alive_check_every: float = Field(30.0, gt=0, description="how often silent platforms are looked at")

    keepalive_timeout: float = Field(
        30.0, gt=0, le=3600,
        description="seconds an idle connection stays open, from connect or the last answer to the next request head")
    request_head_timeout: float = Field(
        10.0, gt=0, le=300, description="seconds from the first byte of a request to its complete head")
    request_body_timeout: float = Field(
        30.0, gt=0, le=3600, description="seconds from a complete request head to the end of its body")
    max_connections: int = Field(
        1000, ge=1, le=1_000_000,
        description="inbound connections per process (at most half the open-file limit); over it the longest-idle "
                    "one is closed, or the newcomer gets 503 when all are busy")

    audit_bodies: bool = False
    audit_retention_days: int = Field(90, ge=1)
    audit_flush_interval: float = Field(0.2, gt=0)

    log_level: str = "INFO"

    @property
    def hub_country_code(self) -> str:
        return self.country_code.upper()

    @property
    def hub_party_id(self) -> str:
        return self.party_id.upper()

    @property
    def data_dir(self) -> Path:
        """The folder of the embedded store (``.hub-data``), also home of a generated admin token."""
        if self.sqlite_path == ":memory:":
            return Path(".hub-data")
        return Path(self.sqlite_path).parent

    @property
    def admin_token_path(self) -> Path:
        """Where ``serve`` keeps a generated admin token (mode 0600) so the CLI on this machine finds it."""
        return self.data_dir / "admin-token"

    @property
    def embedded(self) -> bool:
        """True when running on fakeredis: one process, queued messages are not durable."""
        return not self.redis_url
