"""The one settings object, read once from the environment (and a `.env` file).

Every process reads its configuration through :func:`get_settings`; nothing else looks at
``os.environ``.  ``JWT_SECRET`` has no built-in constant: in development it is generated on
first use into ``./data/jwt_secret`` so that every process of one checkout shares it; in
production (``BULKJOBS_ENV=production``) it must be given.
"""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    env: str = Field(default="development", alias="BULKJOBS_ENV")
    data_dir: Path = Field(default=Path("data"), alias="DATA_DIR")
    database_url: str = Field(default="", alias="DATABASE_URL")
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", alias="REDIS_URL")
    broker_url: str = Field(default="", alias="BROKER_URL")
    redis_prefix: str = Field(
        default="bulkjobs", alias="REDIS_PREFIX", pattern=r"^[A-Za-z0-9_.-]+$"
    )
    jwt_secret: str = Field(default="", alias="JWT_SECRET")
    jwt_ttl: int = Field(default=3600, alias="JWT_TTL")
    web_port: int = Field(default=8000, alias="WEB_PORT")
    stream_port: int = Field(default=8765, alias="STREAM_PORT")
    # Retention of each sync space: at least this many events and at least this many seconds.
    sync_retention: int = Field(default=100_000, alias="SYNC_RETENTION")
    sync_retention_seconds: int = Field(default=86_400, alias="SYNC_RETENTION_SECONDS")
    batch_size: int = Field(default=1000, alias="BATCH_SIZE")
    # SQLite: how long a statement waits for another process's write lock before it fails
    # with "database is locked" (a job then waits and retries, see worker.runner).
    db_busy_timeout: float = Field(default=60.0, alias="DB_BUSY_TIMEOUT", gt=0)
    # Seconds between progress events of one job: at most 1/interval events per second.
    progress_interval: float = Field(default=0.1, alias="PROGRESS_INTERVAL")
    # A running job whose heartbeat is older than this is taken to be dead and re-queued.
    stale_after: float = Field(default=30.0, alias="STALE_AFTER")
    heartbeat_interval: float = Field(default=2.0, alias="HEARTBEAT_INTERVAL")
    queued_stale_after: float = Field(default=120.0, alias="QUEUED_STALE_AFTER")
    reaper_interval: float = Field(default=10.0, alias="REAPER_INTERVAL")
    # A run gives a job back and re-queues it after this many seconds (fairness).
    slice_seconds: float = Field(default=5.0, alias="SLICE_SECONDS")
    record_events: bool = Field(default=True, alias="RECORD_EVENTS")
    auth_timeout: float = Field(default=10.0, alias="AUTH_TIMEOUT")
    membership_refresh: float = Field(default=2.0, alias="MEMBERSHIP_REFRESH")
    # Logs: "plain" text or "json" (one object per line), applied by bulkjobs.logs.
    log_format: str = Field(default="plain", alias="LOG_FORMAT", pattern=r"^(plain|json)$")
    log_level: str = Field(default="INFO", alias="LOG_LEVEL")
    # A Celery worker renews its heartbeat this often; it counts as alive for three periods.
    worker_heartbeat: float = Field(default=5.0, alias="WORKER_HEARTBEAT")
    # The websocket URL the ops dashboard connects to; empty: ws://<request host>:STREAM_PORT/sync
    stream_public_url: str = Field(default="", alias="STREAM_PUBLIC_URL")
    # Per-user rate limit of the HTTP API: requests per fixed window of RATE_LIMIT_WINDOW
    # seconds (0: no limit).  Every authenticated answer carries the X-RateLimit-* headers.
    rate_limit: int = Field(default=6000, alias="RATE_LIMIT", ge=0)
    rate_limit_window: int = Field(default=60, alias="RATE_LIMIT_WINDOW", ge=1)

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'bulkjobs.db').resolve()}"

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or self.redis_url

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


def _development_secret(data_dir: Path) -> str:
    """Read, or create once, the development secret shared by every process of a checkout."""
    path = data_dir / "jwt_secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        candidate = secrets.token_urlsafe(48)
        try:
            # O_EXCL: when two processes start at once, exactly one writes the secret.
            with path.open("x") as fh:
                fh.write(candidate)
        except FileExistsError:
            pass
    return path.read_text().strip()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
