"""A small job's run in-process: the CPU one single-record bulk delete costs the runner
alone, without Celery, the web or the broker.

Seeds a project (SQLite unless ``--database-url``), submits ``--jobs`` one-gid bulk
deletes of distinct leaf records, runs the first ``--warm`` of them untimed, then the rest
one after the other through :func:`worker.runner.run` with the settings' run configuration
(record events on), and prints the CPU time (``time.process_time``: every thread of the
process, the heartbeat's included) and the wall time per job, and one JSON line::

    .venv/bin/python bench/small_job_cpu.py                      # SQLite, 400 jobs
    .venv/bin/python bench/small_job_cpu.py --database-url postgresql://postgres@127.0.0.1:5432/bench_small

Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import isolate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=400)
    ap.add_argument("--warm", type=int, default=20)
    ap.add_argument("--database-url", default="", help="PostgreSQL (default: SQLite)")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/6")
    args = ap.parse_args()
    os.environ["REDIS_URL"] = args.redis_url
    data = isolate(args.database_url or None)
    try:
        print(json.dumps(measure(args.jobs, args.warm, reset=bool(args.database_url))))
    finally:
        shutil.rmtree(data, ignore_errors=True)


def measure(jobs: int, warm: int, *, reset: bool) -> dict[str, object]:
    from sqlalchemy import select, text

    from bulkjobs.connections import get_synclog
    from models.engine import get_engine, get_write_engine, migrate
    from models.records import Record
    from models.seed import seed
    from worker.deps import Deps
    from worker.runner import run
    from worker.submit import submit
    from worker.tasks import run_config

    engine = get_engine()
    if reset:
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    migrate(engine)
    with get_write_engine().begin() as conn:
        project = seed(conn, records=max(1001, 2 * jobs), projects=1, seed_value=7).projects[0]
    records = Record.__table__
    with engine.connect() as conn:
        leaves = list(conn.execute(
            select(records.c.gid).where(records.c.project_gid == project.gid,
                                        records.c.treelevel == 3,
                                        records.c.status != "deleted")
            .order_by(records.c.id).limit(jobs)).scalars())
    log = get_synclog()
    actor = {"type": "user", "id": "bench"}
    tokens = [submit(project_gid=project.gid, job="bulk_delete_records",
                     params={"selection": [gid]}, actor=actor, log=log,
                     enqueue=lambda _: None) for gid in leaves]
    cfg = run_config()
    for token in tokens[:warm]:
        run(token, deps=Deps.default(log), cfg=cfg, requeue=lambda _: None)
    timed = tokens[warm:]
    cpu, wall = time.process_time(), time.perf_counter()
    outcomes = [run(token, deps=Deps.default(log), cfg=cfg, requeue=lambda _: None)
                for token in timed]
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    n = len(timed)
    return {"bench": "small_job_cpu", "database": engine.dialect.name, "jobs": n,
            "done": outcomes.count("done"), "record_events": cfg.record_events,
            "cpu_ms_per_job": round(cpu / n * 1000, 2),
            "wall_ms_per_job": round(wall / n * 1000, 2)}


if __name__ == "__main__":
    main()
