"""Settings are validated at start-up: a bad value names its setting in one line and stops
every process (web, worker, beat, stream, CLI) before it does anything; the development
secret is private (0600) and written atomically."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bulkjobs import settings as settings_module
from bulkjobs.settings import InvalidSetting, Settings, settings_or_exit

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

BAD = [
    ({"BATCH_SIZE": "0"}, "BATCH_SIZE"),
    ({"BATCH_SIZE": "-5"}, "BATCH_SIZE"),
    ({"DB_POOL_SIZE": "0"}, "DB_POOL_SIZE"),
    ({"DB_POOL_SIZE": "many"}, "DB_POOL_SIZE"),
    ({"PROGRESS_INTERVAL": "0"}, "PROGRESS_INTERVAL"),
    ({"STALE_AFTER": "-1"}, "STALE_AFTER"),
    ({"HEARTBEAT_INTERVAL": "0"}, "HEARTBEAT_INTERVAL"),
    ({"HEARTBEAT_INTERVAL": "40", "STALE_AFTER": "30"}, "HEARTBEAT_INTERVAL"),
    ({"QUEUED_STALE_AFTER": "0"}, "QUEUED_STALE_AFTER"),
    ({"REAPER_INTERVAL": "-10"}, "REAPER_INTERVAL"),
    ({"SLICE_SECONDS": "0"}, "SLICE_SECONDS"),
    ({"FOLLOW_SECONDS": "-1"}, "FOLLOW_SECONDS"),
    ({"MEMBERSHIP_REFRESH": "0"}, "MEMBERSHIP_REFRESH"),
    ({"WORKER_HEARTBEAT": "-1"}, "WORKER_HEARTBEAT"),
    ({"JWT_TTL": "0"}, "JWT_TTL"),
    ({"SYNC_RETENTION": "0"}, "SYNC_RETENTION"),
    ({"SYNC_MAX_EVENTS": "0"}, "SYNC_MAX_EVENTS"),
    ({"SYNC_MAX_EVENTS": "1000", "SYNC_RETENTION": "5000"}, "SYNC_MAX_EVENTS"),
    ({"WEB_PORT": "70000"}, "WEB_PORT"),
    ({"BULKJOBS_ENV": "staging"}, "BULKJOBS_ENV"),
    ({"BULKJOBS_ENV": "production", "JWT_SECRET": ""}, "JWT_SECRET"),
    ({"BULKJOBS_ENV": "production", "JWT_SECRET": "short-secret-of-31-bytes-......"},
     "JWT_SECRET"),
    ({"DATABASE_URL": "not a url"}, "DATABASE_URL"),
    ({"DATABASE_URL": "mysql://root@localhost/test"}, "DATABASE_URL"),
    ({"DATABASE_URL": "postgresql://postgres@127.0.0.1:port/test"}, "DATABASE_URL"),
    ({"REDIS_URL": "http://127.0.0.1:6379"}, "REDIS_URL"),
    ({"REDIS_URL": "redis://127.0.0.1:63x9/0"}, "REDIS_URL"),
    ({"REDIS_URL": "redis:///0"}, "REDIS_URL"),
    ({"BROKER_URL": "kafka://127.0.0.1:9092"}, "BROKER_URL"),
    ({"STREAM_PUBLIC_URL": "http://example.com/sync"}, "STREAM_PUBLIC_URL"),
    ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
    ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
    ({"REDIS_SENTINELS": "127.0.0.1:26379,cache", "REDIS_SENTINEL_MASTER": "m"},
     "REDIS_SENTINELS"),
    ({"REDIS_SENTINELS": "127.0.0.1:port", "REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINELS"),
    ({"REDIS_SENTINELS": ":26379", "REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINELS"),
    ({"REDIS_SENTINELS": "127.0.0.1:70000", "REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINELS"),
    ({"REDIS_SENTINELS": "127.0.0.1:26379"}, "REDIS_SENTINELS"),
    ({"REDIS_SENTINEL_MASTER": "mymaster"}, "REDIS_SENTINEL_MASTER"),
    ({"SYNC_REPLICAS": "-1"}, "SYNC_REPLICAS"),
    ({"SYNC_REPLICAS": "two"}, "SYNC_REPLICAS"),
    ({"SYNC_REPLICA_TIMEOUT": "0"}, "SYNC_REPLICA_TIMEOUT"),
]


def load(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    """The settings the given environment makes, read as every process reads them."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return settings_module.get_settings.__wrapped__()  # type: ignore[attr-defined]


@pytest.mark.parametrize(("env", "name"), BAD, ids=[f"{n}={e[n]}" for e, n in BAD])
def test_a_bad_setting_is_named_in_one_line(monkeypatch, env, name):
    with pytest.raises(InvalidSetting) as caught:
        load(monkeypatch, env)
    message = str(caught.value)
    assert name in message
    assert "\n" not in message


@pytest.mark.parametrize("env", [
    {"DATABASE_URL": "postgresql://bob:hunter2-hunter2@db.example:5432/prod", "BATCH_SIZE": "0",
     "REDIS_URL": "ftp://alice:s3cret-s3cret@cache"},
    {"BULKJOBS_ENV": "production", "JWT_SECRET": "s3cret-s3cret"},
    {"REDIS_SENTINEL_PASSWORD": "s3cret-s3cret", "REDIS_SENTINELS": "a:1,b",
     "REDIS_SENTINEL_MASTER": "m", "BATCH_SIZE": "0"},
])
def test_an_error_never_echoes_a_secret(monkeypatch, env):
    with pytest.raises(InvalidSetting) as caught:
        load(monkeypatch, env)
    assert "hunter2" not in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_the_defaults_and_documented_urls_are_valid(monkeypatch):
    for env in ({}, {"DATABASE_URL": "postgresql+psycopg://u:p@db:5432/bulkjobs",
                     "REDIS_URL": "rediss://:pw@cache.example:6380/2",
                     "BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//",
                     "STREAM_PUBLIC_URL": "wss://example.com/sync", "LOG_LEVEL": "debug"},
                {"DATABASE_URL": "sqlite:////var/lib/bulkjobs/db.sqlite",
                 "REDIS_URL": "unix:///run/redis.sock?db=3"},
                {"BULKJOBS_ENV": "production", "JWT_SECRET": "x" * 32}):
        settings = load(monkeypatch, env)
        assert settings.batch_size >= 1


def test_replicas_default_to_one_with_sentinel_and_none_without(monkeypatch):
    """``SYNC_REPLICAS`` unset: appends wait for one replica behind Sentinel, none before a
    lone Redis; set, it is what it says."""
    for name in ("SYNC_REPLICAS", "REDIS_SENTINELS", "REDIS_SENTINEL_MASTER"):
        monkeypatch.delenv(name, raising=False)
    assert Settings().replicas == 0
    monkeypatch.setenv("REDIS_SENTINELS", "127.0.0.1:26379")
    monkeypatch.setenv("REDIS_SENTINEL_MASTER", "m")
    assert Settings().replicas == 1
    monkeypatch.setenv("SYNC_REPLICAS", "0")
    assert Settings().replicas == 0


def test_sentinels_make_the_broker_a_sentinel_url_with_redis_urls_db_and_password(monkeypatch):
    """With REDIS_SENTINELS and REDIS_SENTINEL_MASTER (and BROKER_URL unset) the broker is
    kombu's sentinel:// transport over every sentinel, with REDIS_URL's db and password;
    a BROKER_URL given still wins."""
    settings = load(monkeypatch, {"REDIS_SENTINELS": " 10.0.0.1:26379, sentinel-b:26380 ",
                                  "REDIS_SENTINEL_MASTER": "mymaster", "BROKER_URL": "",
                                  "REDIS_URL": "redis://:pw@unused:6379/4"})
    assert settings.sentinels == [("10.0.0.1", 26379), ("sentinel-b", 26380)]
    assert settings.effective_broker_url == (
        "sentinel://:pw@10.0.0.1:26379/4;sentinel://:pw@sentinel-b:26380/4")
    monkeypatch.setenv("BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
    assert settings_module.get_settings.__wrapped__().effective_broker_url.startswith(  # type: ignore[attr-defined]
        "amqp://")


def test_settings_or_exit_prints_one_line_and_exits_2(monkeypatch, capsys):
    monkeypatch.setenv("BATCH_SIZE", "0")
    settings_module.get_settings.cache_clear()
    try:
        with pytest.raises(SystemExit) as caught:
            settings_or_exit()
    finally:
        monkeypatch.delenv("BATCH_SIZE")
        settings_module.get_settings.cache_clear()
    assert caught.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "BATCH_SIZE" in lines[0]


PROCESSES = {
    "web": [str(BIN / "python"), "-m", "uvicorn", "api.app:app", "--port", "0"],
    "worker": [str(BIN / "python"), "-m", "worker", "-E", "--concurrency", "1"],
    "celery worker": [str(BIN / "celery"), "-A", "worker.app", "worker", "--concurrency", "1"],
    "beat": [str(BIN / "celery"), "-A", "worker.app", "beat"],
    "stream": [str(BIN / "python"), "-m", "stream"],
    "cli": [str(BIN / "bulkjobs"), "migrate"],
}


@pytest.mark.parametrize("process", sorted(PROCESSES))
@pytest.mark.parametrize(("name", "value"), [("BATCH_SIZE", "0"), ("BULKJOBS_ENV", "prod"),
                                             ("HEARTBEAT_INTERVAL", "-1"),
                                             ("REDIS_SENTINELS", "127.0.0.1:port")])
def test_every_process_stops_at_start_on_a_bad_setting(tmp_path, process, name, value):
    """The real command of each Procfile process (and the CLI, and the Celery worker as
    ``celery`` starts it) exits with status 2 before it serves or runs anything, printing
    exactly one line, which names the setting."""
    env = {**os.environ, "DATA_DIR": str(tmp_path), name: value}
    done = subprocess.run(PROCESSES[process], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert name in lines[0]
    assert done.stdout.strip() == ""


def test_the_development_secret_is_private_and_written_once(tmp_path):
    """Twenty processes' worth of threads start at once on an empty data dir: one secret is
    written, every one of them reads that same secret, the file is 0600 and nothing else is
    left in the directory."""
    data_dir = tmp_path / "data"
    seen: list[str] = []
    start = threading.Barrier(20)

    def read() -> None:
        start.wait()
        seen.append(settings_module._development_secret(data_dir))

    threads = [threading.Thread(target=read) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 20 and len(set(seen)) == 1 and len(seen[0]) >= 32
    assert [p.name for p in data_dir.iterdir()] == ["jwt_secret"]
    assert stat.S_IMODE((data_dir / "jwt_secret").stat().st_mode) == 0o600


def test_database_pools_keep_the_configured_number_of_connections(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A pool keeps ``DB_POOL_SIZE`` connections: a process with more requests at once than
    SQLAlchemy's default of 5 does not open and close one for each."""
    from models.engine import POOL_OVERFLOW, make_engine

    monkeypatch.setenv("DB_POOL_SIZE", "17")
    settings_module.get_settings.cache_clear()
    try:
        engine = make_engine(f"sqlite:///{tmp_path}/pool.db")
        assert (engine.pool.size(), engine.pool._max_overflow) == (17, POOL_OVERFLOW)  # type: ignore[attr-defined]
        engine.dispose()
    finally:
        settings_module.get_settings.cache_clear()
