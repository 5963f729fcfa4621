"""The one settings object, read once from the environment (and a `.env` file).

Every process reads its configuration through :func:`get_settings`; nothing else looks at
``os.environ``.  ``JWT_SECRET`` has no built-in constant: in development it is generated on
first use into ``./data/jwt_secret`` (mode 0600) so that every process of one checkout shares
it; in production (``BULKJOBS_ENV=production``) it must be given, at least 32 bytes long.

Every setting is validated when it is read: sizes and counts at least 1, intervals above 0,
URLs that parse with a scheme the product speaks, a known ``BULKJOBS_ENV`` and ``LOG_LEVEL``,
``REDIS_SENTINELS`` as ``host:port`` pairs given together with ``REDIS_SENTINEL_MASTER``.
Each process calls :func:`settings_or_exit` first, so a bad value stops it at start with one
line naming the setting (exit status 2) instead of a job that ends ``done`` with nothing done.
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Settings whose values are never echoed in an error (they may carry passwords).
_SECRET = {"JWT_SECRET", "DATABASE_URL", "REDIS_URL", "BROKER_URL", "METRICS_TOKEN",
           "REDIS_SENTINEL_PASSWORD"}
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_SCHEMES = {
    "DATABASE_URL": ("sqlite", "postgresql"),  # each with an optional +driver
    "REDIS_URL": ("redis", "rediss", "unix"),
    "BROKER_URL": ("redis", "rediss", "unix", "amqp", "amqps", "pyamqp"),
    "STREAM_PUBLIC_URL": ("ws", "wss"),
}


class InvalidSetting(ValueError):
    """Settings that do not validate; ``str()`` is one line naming each bad setting."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    env: Literal["development", "production"] = Field(default="development",
                                                      alias="BULKJOBS_ENV")
    data_dir: Path = Field(default=Path("data"), alias="DATA_DIR")
    database_url: str = Field(default="", alias="DATABASE_URL")
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", alias="REDIS_URL")
    broker_url: str = Field(default="", alias="BROKER_URL")
    # Redis through Sentinel: when both are set, every Redis client (and the broker, while
    # BROKER_URL is unset) asks these sentinels for the current primary of the named master;
    # REDIS_URL's host and port are then unused, its db number and password still apply.
    redis_sentinels: str = Field(default="", alias="REDIS_SENTINELS")  # host:port,host:port
    redis_sentinel_master: str = Field(default="", alias="REDIS_SENTINEL_MASTER")
    redis_sentinel_password: str = Field(default="", alias="REDIS_SENTINEL_PASSWORD")
    # How many replicas must hold a sync-log event before it counts as written (WAIT); unset:
    # 1 with Sentinel, else 0.  Readers deliver only events that many replicas hold.
    sync_replicas: int | None = Field(default=None, alias="SYNC_REPLICAS", ge=0, le=16)
    # Seconds an append or a read waits for those replicas before Redis counts as away.
    sync_replica_timeout: float = Field(default=2.0, alias="SYNC_REPLICA_TIMEOUT", gt=0, le=60)
    redis_prefix: str = Field(
        default="bulkjobs", alias="REDIS_PREFIX", pattern=r"^[A-Za-z0-9_.-]+$"
    )
    jwt_secret: str = Field(default="", alias="JWT_SECRET")
    jwt_ttl: int = Field(default=3600, alias="JWT_TTL", ge=1)
    web_port: int = Field(default=8000, alias="WEB_PORT", ge=1, le=65535)
    stream_port: int = Field(default=8765, alias="STREAM_PORT", ge=1, le=65535)
    # Retention of each sync space: at least this many events and at least this many seconds.
    sync_retention: int = Field(default=100_000, alias="SYNC_RETENTION", ge=1)
    sync_retention_seconds: int = Field(default=86_400, alias="SYNC_RETENTION_SECONDS", ge=1)
    # The most events a sync space holds whatever their age, enforced at every append (Redis
    # memory stays bounded between two trims); at least SYNC_RETENTION.
    sync_max_events: int = Field(default=1_000_000, alias="SYNC_MAX_EVENTS", ge=1)
    batch_size: int = Field(default=1000, alias="BATCH_SIZE", ge=1)
    # SQLite: how long a statement waits for another process's write lock before it fails
    # with "database is locked" (a job then waits and retries, see worker.runner).
    db_busy_timeout: float = Field(default=60.0, alias="DB_BUSY_TIMEOUT", gt=0)
    # Connections a process keeps open per database pool (and as many more it may open for
    # a moment under a burst).  A request or a job that finds none idle opens one: on
    # SQLite that costs the pragmas and the schema's parse, on PostgreSQL a backend's start.
    db_pool_size: int = Field(default=20, alias="DB_POOL_SIZE", ge=1, le=1000)
    # Seconds between progress events of one job: at most 1/interval events per second.
    progress_interval: float = Field(default=0.1, alias="PROGRESS_INTERVAL", gt=0)
    # A running job whose heartbeat is older than this is taken to be dead and re-queued.
    stale_after: float = Field(default=30.0, alias="STALE_AFTER", gt=0)
    heartbeat_interval: float = Field(default=2.0, alias="HEARTBEAT_INTERVAL", gt=0)
    queued_stale_after: float = Field(default=120.0, alias="QUEUED_STALE_AFTER", gt=0)
    reaper_interval: float = Field(default=10.0, alias="REAPER_INTERVAL", gt=0)
    # Of several beat processes only the holder of a Redis lease of this many seconds sends
    # the periodic tasks; another takes over within it once the holder is gone (worker.beat).
    beat_lease_ttl: float = Field(default=10.0, alias="BEAT_LEASE_TTL", ge=1)
    # A run gives a job back and re-queues it after this many seconds (fairness).
    slice_seconds: float = Field(default=5.0, alias="SLICE_SECONDS", gt=0)
    #: Seconds a worker process that finished a job goes on with the next jobs in line of
    #: its project, without their messages (worker.follow); 0: off.
    follow_seconds: float = Field(default=1.0, alias="FOLLOW_SECONDS", ge=0)
    record_events: bool = Field(default=True, alias="RECORD_EVENTS")
    # Finished jobs (and what is kept of them) are removed this many days after they ended.
    job_retention_days: float = Field(default=30.0, alias="JOB_RETENTION_DAYS", gt=0)
    auth_timeout: float = Field(default=10.0, alias="AUTH_TIMEOUT", gt=0)
    membership_refresh: float = Field(default=2.0, alias="MEMBERSHIP_REFRESH", gt=0)
    # Logs: "plain" text or "json" (one object per line), applied by bulkjobs.logs.
    log_format: str = Field(default="plain", alias="LOG_FORMAT", pattern=r"^(plain|json)$")
    log_level: str = Field(default="INFO", alias="LOG_LEVEL")  # one of _LOG_LEVELS
    # A Celery worker renews its heartbeat this often; it counts as alive for three periods.
    worker_heartbeat: float = Field(default=5.0, alias="WORKER_HEARTBEAT", gt=0)
    # The websocket URL the ops dashboard connects to; empty: ws://<request host>:STREAM_PORT/sync
    stream_public_url: str = Field(default="", alias="STREAM_PUBLIC_URL")
    # Per-user rate limit of the HTTP API: requests per fixed window of RATE_LIMIT_WINDOW
    # seconds (0: no limit).  Every authenticated answer carries the X-RateLimit-* headers.
    rate_limit: int = Field(default=6000, alias="RATE_LIMIT", ge=0)
    rate_limit_window: int = Field(default=60, alias="RATE_LIMIT_WINDOW", ge=1)
    # When set, /metrics of the web and stream processes asks for this bearer token.
    metrics_token: str = Field(default="", alias="METRICS_TOKEN")
    # Seconds a session lasts from its login, however often its JWT is renewed (12 hours).
    session_max_age: int = Field(default=43_200, alias="SESSION_MAX_AGE", gt=0)
    # Failed logins (Unicat auth and login, the websocket's auth) are counted per user name
    # and per client address in fixed windows of LOGIN_FAILURE_WINDOW seconds; past either
    # limit a login is refused with 429 before any password is checked (0: no limit).
    login_failures_per_name: int = Field(default=10, alias="LOGIN_FAILURES_PER_NAME", ge=0)
    login_failures_per_address: int = Field(default=100, alias="LOGIN_FAILURES_PER_ADDRESS",
                                            ge=0)
    login_failure_window: int = Field(default=300, alias="LOGIN_FAILURE_WINDOW", ge=1)
    # Websocket: requests one connection may send per second (beyond: an error 429 each;
    # beyond twice as many: closed with 4029), and the most events one subscribe replays
    # (a cursor further behind is answered with recovered: false).
    stream_ops_per_second: int = Field(default=50, alias="STREAM_OPS_PER_SECOND", ge=1)
    stream_max_replay: int = Field(default=100_000, alias="STREAM_MAX_REPLAY", ge=1)
    # Webhooks may point at loopback, private and link-local addresses (models.webhooks).
    webhooks_allow_private: bool = Field(default=False, alias="WEBHOOKS_ALLOW_PRIVATE")
    # Seconds one delivery attempt may take in all (looking up the host, connecting, sending,
    # the answer's status, headers and body).
    webhook_timeout: float = Field(default=10.0, alias="WEBHOOK_TIMEOUT", gt=0, le=300)
    # Seconds before a failed delivery's first retry; each next one waits twice as long, up
    # to an hour, and a delivery is retried for three hours at least whatever this is
    # (models.webhook_deliveries.backoff).
    webhook_backoff_base: float = Field(default=10.0, alias="WEBHOOK_BACKOFF_BASE", gt=0,
                                        le=3600)
    # Threads of the worker process's webhook deliveries' worker (0: none, see worker.__main__).
    webhook_concurrency: int = Field(default=4, alias="WEBHOOK_CONCURRENCY", ge=0, le=256)

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.upper() not in _LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(_LOG_LEVELS)}")
        return value.upper()

    @field_validator("redis_sentinels")
    @classmethod
    def _addresses(cls, value: str) -> str:
        if value.strip():
            parse_addresses(value)
        return value.strip()

    @field_validator("database_url", "redis_url", "broker_url", "stream_public_url")
    @classmethod
    def _parses(cls, value: str, info: ValidationInfo) -> str:
        if value:
            field = info.field_name or ""
            name = cls.model_fields[field].alias or field
            _check_url(value, _SCHEMES[name])
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.env == "production" and len(self.jwt_secret.encode()) < 32:
            raise ValueError("JWT_SECRET must be set to at least 32 bytes when "
                             "BULKJOBS_ENV=production")
        if self.heartbeat_interval >= self.stale_after:
            raise ValueError("HEARTBEAT_INTERVAL must be shorter than STALE_AFTER (a running "
                             "job would look dead between two heartbeats)")
        if self.sync_max_events < self.sync_retention:
            raise ValueError("SYNC_MAX_EVENTS must be at least SYNC_RETENTION (the retention "
                             "would never be kept)")
        if bool(self.redis_sentinels) != bool(self.redis_sentinel_master.strip()):
            raise ValueError("REDIS_SENTINELS and REDIS_SENTINEL_MASTER must be set together "
                             "(one without the other would ignore Sentinel silently)")
        return self

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        """The sentinels' addresses; empty when Redis is reached through ``REDIS_URL``."""
        return parse_addresses(self.redis_sentinels) if self.redis_sentinels else []

    @property
    def replicas(self) -> int:
        """``SYNC_REPLICAS``, or its default: 1 with Sentinel (a failover loses no event),
        else 0 (a lone Redis has no replica to wait for)."""
        if self.sync_replicas is not None:
            return self.sync_replicas
        return 1 if self.redis_sentinels else 0

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'bulkjobs.db').resolve()}"

    @property
    def effective_broker_url(self) -> str:
        """``BROKER_URL``; unset: Redis, through kombu's ``sentinel://`` transport when
        Sentinel is configured (the db number and password of ``REDIS_URL`` on the primary,
        see :mod:`worker.app` for the master's name)."""
        if self.broker_url:
            return self.broker_url
        if not self.redis_sentinels:
            return self.redis_url
        parts = urlsplit(self.redis_url)
        auth = ""
        if parts.password:
            auth = f"{parts.username or ''}:{parts.password}@"
        db = parts.path.lstrip("/") or "0"
        return ";".join(f"sentinel://{auth}{host}:{port}/{db}" for host, port in self.sentinels)

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    @property
    def effective_jwt_secret(self) -> str:
        if self.jwt_secret:
            return self.jwt_secret
        if self.env == "production":
            raise RuntimeError("JWT_SECRET must be set when BULKJOBS_ENV=production")
        return _development_secret(self.data_dir)


def parse_addresses(value: str) -> list[tuple[str, int]]:
    """``host:port,host:port`` as (host, port) pairs; ``ValueError`` naming a bad one."""
    out = []
    for item in value.split(","):
        host, sep, port = item.strip().rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"must be host:port pairs separated by commas ({item.strip()!r} "
                             "is not)")
        out.append((host, int(port)))
    return out


def _check_url(value: str, schemes: tuple[str, ...]) -> None:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise ValueError("is not a URL") from exc
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in schemes:
        raise ValueError(f"must be a URL starting with {' or '.join(s + '://' for s in schemes)}")
    if scheme not in ("sqlite", "unix") and not parts.hostname:
        raise ValueError("has no host")


def _development_secret(data_dir: Path) -> str:
    """Read, or create once, the development secret shared by every process of a checkout.

    The secret is written to a private temporary file (mode 0600) that is then linked to its
    name: the link either appears whole or fails because another process won the race, so no
    process ever reads a half-written or world-readable secret."""
    path = data_dir / "jwt_secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=".jwt_secret.")  # mode 0600
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(48))
                fh.flush()
                os.fsync(fh.fileno())
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    return path.read_text().strip()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings; :class:`InvalidSetting` (one line) when one does not validate."""
    try:
        return Settings()
    except ValidationError as exc:
        raise InvalidSetting(_one_line(exc)) from None


def settings_or_exit() -> Settings:
    """The settings, for a process starting: a bad setting prints one line naming it on
    stderr and exits with status 2 (every entry point calls this before anything else)."""
    try:
        return get_settings()
    except InvalidSetting as exc:
        print(f"bulkjobs: invalid settings: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def _one_line(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        name = ".".join(str(part) for part in error["loc"])
        if not name:  # a check across settings names them in its message
            problems.append(message)
            continue
        shown = "" if name in _SECRET else f" (got {error['input']!r})"
        problems.append(f"{name}: {message}{shown}")
    return "; ".join(problems)
