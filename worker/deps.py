"""What a run is given: its settings (:class:`RunConfig`) and what it works with
(:class:`Deps`: the engines and the sync log).

The caller builds both once per run (:func:`worker.tasks.run_job` from the settings and the
process's engines; tests build their own) and hands them down: nothing in the job lifecycle
(:mod:`worker.runner` and the modules it uses) fetches an engine for itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from sqlalchemy import Engine

from bulkjobs.settings import get_settings
from bulkjobs.synclog import SyncLog
from models.engine import get_engine, get_write_engine, make_engine


@dataclass
class RunConfig:
    # Items per batch; with ``adaptive_batches`` the upper bound of batches sized to take
    # :data:`models.engine.BATCH_SECONDS` (the worker does so on SQLite, see
    # :func:`worker.tasks.run_config`); off here so that a runner driven directly takes
    # exactly ``batch_size`` items per batch.
    batch_size: int = 1000
    adaptive_batches: bool = False
    progress_interval: float = 0.1
    heartbeat_interval: float = 2.0
    stale_after: float = 30.0
    slice_seconds: float = 5.0
    # Record events (SPEC §7); the worker takes this from the settings (RECORD_EVENTS, on by
    # default there).  Off here so that a runner driven directly announces only job events.
    record_events: bool = False
    # Unexpected failures retried before the job is rejected (SPEC §6: up to 3 times).
    max_retries: int = 3
    # Seconds a process that finished a job goes on with the next jobs in line of its
    # project before it returns to the broker (:mod:`worker.follow`); the worker takes it
    # from the settings (FOLLOW_SECONDS).  Off here: a runner driven directly runs its job.
    follow_seconds: float = 0.0


@dataclass(frozen=True)
class Deps:
    """The engines and the sync log a run (or the reaper, or a cancel) works with."""

    #: Reads (``with deps.engine.connect() as conn``).
    engine: Engine
    #: Write transactions, which take their turn on SQLite (:func:`models.engine.get_write_engine`).
    write_engine: Engine
    #: The heartbeat threads' own pool (:func:`side_engine`).
    side_engine: Engine
    log: SyncLog

    @classmethod
    def default(cls, log: SyncLog, *, heartbeat: bool = True) -> Deps:
        """The process's engines (:mod:`models.engine`, :func:`side_engine`) and ``log``.
        ``heartbeat=False`` for a caller that runs no job (a cancel in the web process): the
        heartbeat's pool is not created, ``side_engine`` is the main engine."""
        engine = get_engine()
        return cls(engine=engine, write_engine=get_write_engine(),
                   side_engine=side_engine() if heartbeat else engine, log=log)


@lru_cache(maxsize=1)
def side_engine() -> Engine:
    """An engine (a connection pool) of its own for the heartbeat threads, one per process.

    Sharing the main pool, the heartbeat would check connections out between the batches
    and hand them back to the batch loop in turn; on SQLite every connection keeps its own
    page cache, so a worker would fill two or three caches instead of one (P9)."""
    return make_engine(get_settings().effective_database_url)
