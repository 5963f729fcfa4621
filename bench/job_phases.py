"""One big record job in-process, timed by phase: where its time goes, without Celery, the
web or the broker.

Seeds a project of ``--records`` records (every record holds the search marker, nothing is
deleted; SQLite unless ``--database-url``), or copies a seeded SQLite file kept by an
earlier run (``--seed-cache FILE``: written when missing), then runs one job through
:func:`worker.runner.run` with the settings' run configuration (record events on) until it
ends, slices included, and prints the time of each phase and one JSON line:

* ``search delete`` (default): ``bulk_delete_records`` of a search matching every record,
  one item per record (resolution, the parents-first renumbering, the copy into
  ``job_item``, the batches, the clean-up of the items);
* ``--job permanent``: the root's children deleted first (untimed), then
  ``bulk_permanent_delete_records`` of the subtree heads as plain gids;
* ``--job children``: ``bulk_delete_records`` of the root's children (the subtree heads
  and the root's links), a generation of 100 records per head.

``--events off`` runs it with ``RECORD_EVENTS=false`` (default on, as deployed).

``phases`` are wall seconds spent in ``resolve`` (of which ``search``, ``renumber`` and
``copy``), ``batches`` and ``cleanup``; ``wal_peak_mib`` is the largest size the SQLite WAL
file reached (sampled every 0.5 s)::

    .venv/bin/python bench/job_phases.py --records 1000000 --seed-cache /tmp/seed1m.db
    .venv/bin/python bench/job_phases.py --records 200000 \\
        --database-url postgresql://postgres@127.0.0.1:5432/bench_phases   # schema dropped

Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import isolate, reset_postgres  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--job", choices=["search", "permanent", "children"], default="search")
    ap.add_argument("--events", choices=["on", "off"], default="on", help="RECORD_EVENTS")
    ap.add_argument("--database-url", default="", help="PostgreSQL (default: SQLite)")
    ap.add_argument("--seed-cache", default="", help="a seeded SQLite file to copy (or write)")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/6")
    args = ap.parse_args()
    os.environ["REDIS_URL"] = args.redis_url
    os.environ["RECORD_EVENTS"] = "true" if args.events == "on" else "false"
    data = isolate(args.database_url or None)
    if args.database_url:
        reset_postgres(args.database_url)
    try:
        print(json.dumps(measure(args, data)))
    finally:
        shutil.rmtree(data, ignore_errors=True)


class Phases:
    """Wall seconds spent in the wrapped functions, by phase name."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def wrap(self, module: Any, name: str, phase: str) -> None:
        inner: Callable[..., Any] = getattr(module, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds[phase] = (self.seconds.get(phase, 0.0)
                                       + time.perf_counter() - started)

        setattr(module, name, timed)


def measure(args: argparse.Namespace, data: Path) -> dict[str, Any]:
    from sqlalchemy import text

    import models.resolve
    import worker.jobs.records
    import worker.runner
    import worker.terminal
    from bulkjobs.connections import get_synclog
    from models.engine import get_engine, get_write_engine, migrate
    from models.seed import seed
    from worker.deps import Deps
    from worker.runner import run
    from worker.submit import submit
    from worker.tasks import run_config

    db_file = data / "bench.db"
    engine = get_engine()
    cache = Path(args.seed_cache) if args.seed_cache and not args.database_url else None
    if cache is not None and cache.exists():
        shutil.copy(cache, db_file)
        migrate(engine)
    else:
        migrate(engine)
        with get_write_engine().begin() as conn:
            seed(conn, records=args.records, projects=1, seed_value=7, deleted_every=0,
                 marker_every=1)
        if args.database_url:
            with engine.begin() as conn:
                conn.execute(text("ANALYZE"))
        elif cache is not None:  # a consistent copy, whatever is still in the WAL
            source, target = sqlite3.connect(db_file), sqlite3.connect(cache)
            source.backup(target)
            source.close()
            target.close()
    with engine.connect() as conn:
        project, root = conn.execute(text(
            "SELECT project_gid, gid FROM record WHERE parent_id IS NULL "
            "ORDER BY (SELECT COUNT(*) FROM record c WHERE c.parent_id = record.id) DESC "
            "LIMIT 1")).one()
        heads = list(conn.execute(text(
            "SELECT h.gid FROM record h JOIN record r ON h.parent_id = r.id "
            "WHERE r.gid = :g ORDER BY h.id"), {"g": root}).scalars())

    log = get_synclog()
    actor = {"type": "user", "id": "bench"}

    def run_to_end(job: str, selection: list[Any]) -> str:
        token = submit(project_gid=project, job=job, params={"selection": selection},
                       actor=actor, log=log, enqueue=lambda _: None)
        while True:
            run(token, deps=Deps.default(log), cfg=run_config(), requeue=lambda _: None)
            with engine.connect() as conn:
                status = conn.execute(text("SELECT status FROM job WHERE token = :t"),
                                      {"t": token}).scalar_one()
            if status in ("done", "rejected"):
                return str(status)

    job, selection = "bulk_delete_records", [{"search": {"language": "en", "q": "lighthouse"}}]
    if args.job == "permanent":
        run_to_end("bulk_delete_records", [{"children": root}])
        job, selection = "bulk_permanent_delete_records", heads
    elif args.job == "children":
        selection = [{"children": root}]

    phases = Phases()
    phases.wrap(worker.runner, "resolve_in_slices", "resolve")
    phases.wrap(worker.runner, "batch_step", "batches")
    phases.wrap(worker.terminal, "delete_items", "cleanup")
    phases.wrap(models.resolve, "resolve_into", "search")
    phases.wrap(models.resolve, "_copy_in_slices", "copy")
    phases.wrap(worker.jobs.records, "reorder_items", "renumber")
    wal_peak = [0]

    def watch_wal() -> None:
        wal = Path(str(db_file) + "-wal")
        while True:
            if wal.exists():
                wal_peak[0] = max(wal_peak[0], wal.stat().st_size)
            time.sleep(0.5)

    threading.Thread(target=watch_wal, daemon=True).start()
    started, cpu = time.perf_counter(), time.process_time()
    status = run_to_end(job, selection)
    return {"bench": "job_phases", "job": job, "records": args.records,
            "database": "postgresql" if args.database_url else "sqlite", "status": status,
            "events": args.events,
            "seconds": round(time.perf_counter() - started, 2),
            "cpu_s": round(time.process_time() - cpu, 2),
            "phases": {k: round(v, 2) for k, v in phases.seconds.items()},
            "wal_peak_mib": wal_peak[0] // 2**20}


if __name__ == "__main__":
    main()
