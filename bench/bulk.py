"""P1 / P2 / P9: bulk undelete of 1,000,000 records (10,000 subtrees of 100).

What is measured, in one run on one machine:

* **job** — from ``worker.submit.submit`` (the job row, the ``queued`` event, the Celery
  message) to the moment the job's ``done`` event is read from the sync log, with a real
  ``celery -A worker.app worker`` process (prefork, concurrency 1) doing the work;
* **raw** — one set-based ``DELETE FROM record_deletion WHERE deleted_root IN (<the heads'
  ids>)`` of the same rows (the deletion state lives in that narrow table, see
  :mod:`models.records`), the ids given as one parameter, committed, in this process: the
  floor the job is compared with;
* **RSS** — the peak RSS (``VmHWM``) of the worker's pool child process after the job, and of
  the seeding process (a subprocess of its own) after seeding 1,000,000 records.

Between runs the rows are deleted again with one set-based statement, so each run starts
from the same state (10,000 deleted subtrees, each its own delete generation); the tables
are then checkpointed (SQLite) or vacuumed and analysed (PostgreSQL) so that neither run
pays for the other's garbage.

Usage::

    .venv/bin/python -m bench.bulk                          # SQLite in a temporary directory
    .venv/bin/python -m bench.bulk --database-url postgresql://postgres@127.0.0.1:5432/bench

A PostgreSQL database is emptied first (every table in its ``public`` schema is dropped):
point it at a scratch database.  Redis keys live under a prefix of their own.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

SUBTREE = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default="", help="default: SQLite in a temp dir")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL",
                                                              "redis://127.0.0.1:6379/0"))
    parser.add_argument("--subtrees", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--record-events", choices=("on", "off", "both"), default="both",
                        help="run the job with record events off, on, or both (one run each)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="timed runs (raw, then job) per record-events setting")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--seed-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seed_only:
        _seed_child(args)
        return
    workdir = Path(tempfile.mkdtemp(prefix="bulkjobs-bench-"))
    url = args.database_url or f"sqlite:///{workdir}/bench.db"
    env = {
        "DATA_DIR": str(workdir), "DATABASE_URL": url, "REDIS_URL": args.redis_url,
        "BROKER_URL": args.redis_url, "REDIS_PREFIX": f"bjbench{uuid.uuid4().hex[:8]}",
        "JWT_SECRET": uuid.uuid4().hex, "BATCH_SIZE": str(args.batch_size),
    }
    os.environ.update(env)
    try:
        report = _bench(args, env, workdir)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(report, indent=2))


def _bench(args: argparse.Namespace, env: dict[str, str], workdir: Path) -> dict[str, Any]:
    # Imported after the environment is set: settings are read once per process.
    from sqlalchemy import text

    from models.engine import get_engine, migrate

    engine = get_engine()
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    migrate(engine)
    seeded = _run_seeder(args, env)
    project, n = seeded["project"], seeded["records"]
    _log(f"seeded {n} deleted records in {seeded['seconds']:.1f} s "
         f"(seeder peak RSS {seeded['rss_mib']:.0f} MiB)")
    report: dict[str, Any] = {
        "database": engine.dialect.name, "records": n, "subtrees": args.subtrees,
        "batch_size": args.batch_size, "seed": seeded, "runs": [],
    }
    modes = {"on": [True], "off": [False], "both": [False, True]}[args.record_events]
    # Settings alternate (off, on, off, on …): on a shared machine the load drifts, and the
    # ratio of the two is only fair when their runs are interleaved.
    for events in [m for _ in range(args.repeat) for m in modes]:
        _settle(engine)
        raw = _raw_undelete(engine, project)
        assert raw["rows"] == n, raw
        _redelete(engine, project, n)
        _settle(engine)
        job = _job_undelete(engine, project, env, events=events)
        assert job["rows"] == n, job
        _redelete(engine, project, n)
        run = {
            "record_events": events, "raw_seconds": raw["seconds"],
            "raw_records_per_s": round(n / raw["seconds"]),
            "job_seconds": job["seconds"], "job_records_per_s": round(n / job["seconds"]),
            "ratio_job_to_raw": round(job["seconds"] / raw["seconds"], 2),
            "worker_peak_rss_mib": job["rss_mib"], "progress_events": job["progress_events"],
        }
        _log(json.dumps(run))
        report["runs"].append(run)
    return report


def _log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# --- seeding (in a process of its own, for its peak RSS) ------------------------------------


def _run_seeder(args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.bulk", "--seed-only", "--subtrees", str(args.subtrees)]
    out = subprocess.run(cmd, env={**os.environ, **env}, check=True, capture_output=True,
                         text=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def _seed_child(args: argparse.Namespace) -> None:
    from models.engine import get_write_engine
    from models.seed import seed

    # One link per 10,000 records is budgeted by the seeder and made only to live subtrees:
    # with every subtree deleted there are none, and the tree is the root + 10,000 × 100.
    records = args.subtrees * SUBTREE + 1 + args.subtrees // 100
    start = time.perf_counter()
    with get_write_engine().begin() as conn:
        result = seed(conn, records=records, projects=1, seed_value=1, deleted_every=1)
    seconds = time.perf_counter() - start
    project = result.projects[0]
    print(json.dumps({"project": project.gid, "records": args.subtrees * SUBTREE,
                      "seconds": round(seconds, 1), "rss_mib": _hwm_mib(os.getpid())}))


def _hwm_mib(pid: int) -> float:
    """Peak resident set size (``VmHWM``) of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmHWM for {pid}")


# --- the two undeletes ----------------------------------------------------------------------


def _raw_undelete(engine: Any, project: str) -> dict[str, Any]:
    """The heads' ids are looked up first, untimed; the timed part is one statement that
    removes their generations' deletion rows, given the ids as one parameter, and its
    commit."""
    from sqlalchemy import text

    from models import dialect

    with engine.connect() as conn:
        heads = conn.execute(text(
            "SELECT r.id FROM record r JOIN record p ON p.id = r.parent_id "
            "WHERE p.parent_id IS NULL AND r.project_gid = :p ORDER BY r.id"
        ), {"p": project}).scalars().all()
    start = time.perf_counter()
    with engine.execution_options(writer=True).begin() as conn:
        rows = conn.execute(text(
            "DELETE FROM record_deletion WHERE deleted_root IN "
            f"(SELECT j.value FROM {dialect.id_rows(conn, 'heads')})"
        ), {"heads": dialect.json_ids(heads)}).rowcount
    return {"rows": rows, "seconds": round(time.perf_counter() - start, 3)}


def _job_undelete(engine: Any, project: str, env: dict[str, str], *,
                  events: bool) -> dict[str, Any]:
    from sqlalchemy import text

    from bulkjobs import keys
    from bulkjobs.connections import get_synclog
    from worker.app import enqueue
    from worker.submit import submit

    with engine.connect() as conn:
        heads = conn.execute(text(
            "SELECT r.gid FROM record r JOIN record p ON p.id = r.parent_id "
            "WHERE p.parent_id IS NULL AND r.project_gid = :p ORDER BY r.id"
        ), {"p": project}).scalars().all()
    log = get_synclog()
    worker = _start_worker({**env, "RECORD_EVENTS": "true" if events else "false"})
    try:
        after = log.cursor(keys.CC_SPACE)
        start = time.perf_counter()
        token = submit(project_gid=project, job="bulk_undelete_records",
                       params={"selection": heads}, actor={"type": "user", "id": "bench"},
                       log=log, enqueue=enqueue)
        del heads
        done = None
        progress = 0
        while done is None:
            page = log.read(keys.CC_SPACE, after)
            for event in page.events:
                after = event.cursor
                if event.key != token:
                    continue
                body = event.as_dict()
                if body["data"]["status"] == "processing":
                    progress += 1
                elif body["data"]["status"] in ("done", "rejected"):
                    done = body
            if done is None and not page.events:
                time.sleep(0.002)
        seconds = time.perf_counter() - start
        assert done["data"]["status"] == "done", done
        rss = _hwm_mib(_pool_child(worker.pid))
    finally:
        worker.terminate()
        worker.wait(60)
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT COUNT(*) FROM record r WHERE r.project_gid = :p AND r.parent_id IS NOT NULL "
            "AND NOT EXISTS (SELECT 1 FROM record_deletion d WHERE d.record_id = r.id)"
        ), {"p": project}).scalar_one()
    return {"rows": rows, "seconds": round(seconds, 3), "rss_mib": rss,
            "progress_events": progress}


def _start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = Path(env["DATA_DIR"]) / f"worker-{time.time_ns()}.log"
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "celery"), "-A", "worker.app", "worker",
         "--loglevel", "WARNING", "--concurrency", "1", "--without-mingle",
         "--without-gossip", "--hostname", f"bench-{time.time_ns()}@%h"],
        env={**os.environ, **env}, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not _children(proc.pid):
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"worker did not start: {log.read_text()}")
        time.sleep(0.1)
    time.sleep(1.0)  # the consumer connects after the pool is up
    return proc


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _pool_child(pid: int) -> int:
    kids = _children(pid)
    if len(kids) != 1:
        raise RuntimeError(f"expected one pool process under {pid}, found {kids}")
    return kids[0]


# --- between runs -----------------------------------------------------------------------------


def _redelete(engine: Any, project: str, n: int) -> None:
    """Put the rows back as the seeder left them: each subtree deleted as one generation
    of its head (the second id in the materialised path)."""
    from sqlalchemy import text

    with engine.execution_options(writer=True).begin() as conn:
        root = conn.execute(text("SELECT id FROM record WHERE project_gid = :p AND "
                                 "parent_id IS NULL"), {"p": project}).scalar_one()
        if engine.dialect.name == "postgresql":
            head = "CAST(split_part(mpath, '/', 3) AS INTEGER)"
        else:
            skip = len(f"/{root}/") + 1
            head = (f"CAST(substr(mpath, {skip}, instr(substr(mpath, {skip}), '/') - 1) "
                    "AS INTEGER)")
        rows = conn.execute(text(
            f"INSERT INTO record_deletion (record_id, deleted_root) SELECT id, {head} "
            "FROM record WHERE project_gid = :p AND parent_id IS NOT NULL "
            "ON CONFLICT (record_id) DO NOTHING"), {"p": project}).rowcount
        conn.execute(text("DELETE FROM workflow_entry"))
        conn.execute(text("DELETE FROM job_item"))
    assert rows == n, (rows, n)


def _settle(engine: Any) -> None:
    """Start each timed run from a clean slate: checkpoint the WAL (SQLite), or vacuum and
    analyse the database and checkpoint (PostgreSQL, outside a transaction)."""
    from sqlalchemy import text

    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))  # every table, job_item's last run's rows too
            conn.execute(text("CHECKPOINT"))
    else:
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.commit()


if __name__ == "__main__":
    main()
