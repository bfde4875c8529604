"""The one settings object of the hub: every knob is an environment variable with prefix ``HUB_``."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from routing.agreements import Policy
from routing.redis_url import check_redis_url

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# The Redis key prefix sits inside a cluster hash tag ``{prefix}``: braces would end the tag early.
KEY_PREFIX = re.compile(r"[A-Za-z0-9._:-]{1,64}")
SECRET_SETTINGS = frozenset(("admin_token", "redis_url", "mongo_url"))  # never echoed in an error


class SettingsError(Exception):
    """A setting is invalid; the message is one line naming the variable."""


class Settings(BaseSettings):
    """Read once at start and passed down explicitly; no other module reads the environment."""

    model_config = SettingsConfigDict(env_prefix="HUB_", extra="ignore")

    env: Literal["production", "development"] = Field(
        "production", description="development accepts a weak HUB_ADMIN_TOKEN; anything reachable is production")
    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(8080, ge=1, le=65535)
    public_url: str = Field("", description="advertised base URL; empty = http://127.0.0.1:<HUB_PORT>")
    country_code: str = "NL"
    party_id: str = "HUB"
    hub_name: str = "OCPI Hub"

    redis_url: str | None = Field(
        None, description="redis://, rediss:// (TLS), unix:// or redis+sentinel://h1:26379,h2:26379/<service>[/<db>] "
                          "(rediss+sentinel:// with TLS), docs/high-availability.md; unset = embedded fakeredis")
    mongo_url: str | None = None
    mongo_db: str = "ocpi_hub"
    sqlite_path: str = ".hub-data/hub.sqlite3"
    key_prefix: str = "ocpi-hub"

    admin_token: str | None = None
    url: str = Field("", description="where the CLI finds a running hub (HUB_URL); empty = http://127.0.0.1:<HUB_PORT>")
    config_dir: str = Field("~/.config/ocpi-hub", description="where serve leaves the CLI a pointer to its token")

    forward_timeout: float = Field(5.0, gt=0, description="seconds a receiver has to answer a forwarded request")
    registration_timeout: float = Field(10.0, gt=0, description="seconds per call to a partner during registration")
    max_reply_bytes: int = Field(
        32 * 1024 * 1024, ge=64 * 1024, le=1024**3,
        description="largest answer read from a receiver (bytes); a larger one is 502/4000, never buffered whole")
    max_inflight_per_receiver: int = Field(
        32, ge=1, description="messages in flight per receiver and hub process; a receiver sees at most this times "
                              "the live hub processes sharing Redis")
    delivery_concurrency: int = Field(512, ge=1, description="deliveries one process runs at once")
    connections_per_receiver: int = Field(64, ge=1)
    forward_client: Literal["lean", "aiohttp"] = Field(
        "lean", description="what forwards routed requests to receivers: the hub's keep-alive HTTP/1.1 client "
        "(routing/upstream.py) or aiohttp's ClientSession (docs/architecture.md, 'The forward client')")

    allow_private_urls: bool = Field(
        False, description="let the hub call partner URLs on private, loopback and link-local addresses: "
        "development and tests with partners on 127.0.0.1 only (docs/security.md, 'Outbound URLs')")
    # Admission control (hub/admission.py, docs/security.md): what may wait on receivers in one process.
    max_waiting_requests: int = Field(
        1024, ge=1, le=1_000_000,
        description="requests one process holds at once while they wait on receivers or are queued")
    max_waiting_bytes: int = Field(
        32 * 1024 * 1024, ge=64 * 1024, le=64 * 1024**3,
        description="request body bytes one process holds at once for those requests")
    max_waiting_requests_per_receiver: int = Field(
        256, ge=1, le=1_000_000, description="requests one process holds at once for one receiver platform")
    max_waiting_bytes_per_receiver: int = Field(
        8 * 1024 * 1024, ge=64 * 1024, le=64 * 1024**3,
        description="request body bytes one process holds at once for one receiver platform")
    admission_retry_after: float = Field(
        1.0, ge=1, le=3600, description="seconds answered in Retry-After when admission refuses a request")

    # Per-platform rate limit (hub/ratelimit.py): a token bucket per platform, its total over every process.
    rate_limit_rps: float = Field(
        500.0, gt=0, le=1_000_000, description="requests per second a platform may send, hub-wide, by default")
    rate_limit_burst: int = Field(
        1000, ge=1, le=10_000_000, description="requests a platform may send at once above its rate, by default")
    rate_limit_hold: float = Field(
        1.0, ge=0, le=10,
        description="seconds a 429 is held back before it is sent (at most its Retry-After; 0 = answer at once)")
    rate_limit_sync_interval: float = Field(
        0.25, ge=0.05, le=10, description="seconds between the processes' exchanges of what each admitted")

    roaming_policy: Policy = Field(
        Policy.OPEN, description="open: every party may exchange every module with every other (no agreement "
        "needed); agreements: only what a roaming agreement in force covers (docs/agreements.md)")

    broadcast_retry_window: float = Field(600.0, gt=0, description="seconds a fan-out delivery is retried")
    store_forward_window: float = Field(
        7 * 86400.0, gt=0, le=90 * 86400.0,
        description="seconds a message accepted for later delivery (store-and-forward) is retried before it "
                    "becomes a dead letter (docs/store-and-forward.md)")
    store_forward_max_backoff: float = Field(
        60.0, ge=1, le=86400,
        description="longest wait between two attempts of a stored message (seconds); a message waiting for its "
                    "retry holds one of its receiver's in-flight slots")
    # Result URLs of commands and charging profiles (docs/ocpi-decisions.md, Callback URLs).
    result_url_grace: float = Field(
        60.0, gt=0, le=3600,
        description="seconds a result URL outlives the CPO's timeout, or a reservation's expiry_date (RESERVE_NOW)")
    result_url_max_lifetime: float = Field(
        24 * 3600.0, gt=0, le=30 * 24 * 3600.0,
        description="seconds a result URL lives at most, whatever timeout or expiry_date a partner names")
    alive_interval: float = Field(300.0, gt=0, description="silence before a still-alive GET versions")
    alive_check_every: float = Field(30.0, gt=0, description="how often silent platforms are looked at")

    max_body_bytes: int = Field(
        1024 * 1024, ge=16 * 1024, le=16 * 1024 * 1024,
        description="largest request body read (bytes); larger ones get 413 without being read whole "
                    "(docs/security.md, Body size and malformed input)",
    )
    redis_timeout: float = Field(
        1.0, gt=0, le=30,
        description="seconds Redis has to connect or answer before the hub counts it as down (then 503); keep it "
                    "well under HUB_FORWARD_TIMEOUT: a caller should hear of a frozen Redis before its own timeout")
    redis_wait_replicas: int = Field(
        0, ge=0, le=16,
        description="replicas that must have a broadcast or a message accepted for later delivery before the sender "
                    "gets 1000 (Redis WAIT, at most HUB_REDIS_TIMEOUT / 2; fewer: 503); 0 = off. With Sentinel set 1 "
                    "so a failover loses none of them (docs/high-availability.md)")
    dead_letter_max_count: int = Field(
        10_000, ge=1, le=10_000_000, description="dead letters kept per receiver; the oldest go first")
    dead_letter_max_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024 * 1024,
        description="payload bytes of dead letters kept per receiver; the oldest go first")
    dead_letter_ttl: float = Field(
        7 * 24 * 3600.0, ge=60, le=365 * 24 * 3600.0,
        description="seconds a dead letter is kept before it expires")
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

    secret_keys: str | None = Field(
        None, description="comma-separated Fernet keys sealing outbound tokens at rest and keying route-hint "
        "hashes: the first seals, all open (rotation). Unset: a key kept in the data dir; required with MongoDB")
    token_retention_days: int = Field(
        365, ge=1, le=3650, description="days a token stored for GET All is kept after its last_updated")
    catchup_days: int = Field(
        30, ge=0, le=3650, description="days the hub keeps each Session and CDR it routed (sealed, from its last "
        "update) so its receiver can fetch it again (docs/catchup.md); 0 = keep none and serve none")
    route_hint_retention_days: int = Field(
        365, ge=1, le=3650, description="days an open-routing hint is kept after it was last seen")
    console: bool = Field(True, description="serve the operator console at /console (docs/console.md)")
    console_session_minutes: float = Field(
        120.0, gt=0, le=7 * 24 * 60,
        description="minutes a console login lasts (from the login, not from the last click); fractions allowed")
    metrics_token: str | None = Field(
        None, min_length=16, description="bearer token /metrics requires; unset = /metrics is open")

    log_level: str = Field("INFO", description="one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    log_throttle_lines: int = Field(
        20, ge=1, le=10_000,
        description="log lines per kind (refused request, malformed HTTP, rejected audit record) per interval",
    )
    log_throttle_interval: float = Field(
        10.0, gt=0, le=3600, description="seconds of one log-throttle interval; then the suppressed count is logged",
    )
    unknown_token_cache_seconds: float = Field(
        5.0, ge=0, le=300, description="seconds a token unknown to the store is refused without asking it again",
    )
    unknown_token_cache_size: int = Field(
        10_000, ge=0, le=1_000_000, description="unknown tokens remembered at most (oldest forgotten first)",
    )

    @field_validator("secret_keys")
    @classmethod
    def _fernet_keys(cls, value: str | None) -> str | None:
        """A bad key fails at start with the setting's name, not at the first sealed token."""
        if value is None:
            return None
        keys = [k.strip() for k in value.split(",") if k.strip()]
        if not keys:
            raise ValueError("HUB_SECRET_KEYS is empty: unset it or give at least one key")
        for i, key in enumerate(keys):
            try:
                if len(base64.urlsafe_b64decode(key.encode())) != 32:
                    raise ValueError
            except ValueError:
                raise ValueError(f"key #{i + 1} is not a Fernet key (32 url-safe base64 bytes); "
                                 "make one with `ocpi-hub secret-key`") from None
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        """One line naming what is wrong (never the URL: it may carry a password)."""
        if value:
            check_redis_url(value)
        return value or None

    @field_validator("redis_wait_replicas")
    @classmethod
    def _replicas_need_redis(cls, value: int, info: ValidationInfo) -> int:
        if value and not info.data.get("redis_url"):
            raise ValueError("needs HUB_REDIS_URL: the embedded fakeredis has no replicas")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        if value.upper() not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return value.upper()

    @field_validator("key_prefix")
    @classmethod
    def _key_prefix(cls, value: str) -> str:
        if not KEY_PREFIX.fullmatch(value):
            raise ValueError("must be 1-64 letters, digits, '.', '_', ':' or '-' (it is a Redis hash tag)")
        return value

    @field_validator("public_url", "url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value:
            parts = urlsplit(value)
            try:
                parts.port  # noqa: B018 (raises on a port that is not a number)
            except ValueError:
                raise ValueError("has an invalid port") from None
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("must be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _follow_port(self) -> Settings:
        """Unless set, the advertised URL and the CLI's URL follow HUB_PORT (and ``serve --port``)."""
        if not self.public_url:
            self.public_url = f"http://127.0.0.1:{self.port}"
        if not self.url:
            self.url = f"http://127.0.0.1:{self.port}"
        return self


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


def load_settings() -> Settings:
    """The settings from the environment, or a :class:`SettingsError` naming the first bad variable."""
    try:
        return Settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else ""
        shown = "" if name in SECRET_SETTINGS else f"={err.get('input')!r}"
        reason = str(err["msg"]).removeprefix("Value error, ")
        raise SettingsError(f"invalid setting HUB_{name.upper()}{shown}: {reason}") from None
