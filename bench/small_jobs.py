"""Many small jobs: single-record jobs of each kind queued through the API by concurrent
clients, beside raw Celery draining as many no-op tasks with the same worker set-up.

Set-up, as the Procfile runs it, with default settings (``RECORD_EVENTS`` on): one web
process (``python -m uvicorn api.app:app``) and two worker processes (``python -m worker -E
--loglevel INFO --concurrency 2 --hostname worker-<n>@%h``: prefork, two pool processes
each, plus each one's webhook deliveries' worker).  One project of a few thousand records
(``models.seed``, nothing deleted); each job takes one leaf record, a different one per job.

Kinds (``--kinds``), each ``--jobs`` requests from ``--clients`` keep-alive connections of a
lean HTTP/1.1 client (:mod:`bench.loadgen`'s way, one request in flight per connection), all
with the JWT of the project's API key:

* ``unicat-delete``: ``POST /api/p/<p>/records/bulk/delete {"selection": [gid]}`` (200 at
  once with the token);
* ``dato-restore``: ``POST /dato/p/<p>/versions/<version 0 id>/restore`` (202 at once;
  with 15 or more in flight the route's held session connections can exhaust the web's pool
  until its 30 s timeout, see BENCHMARKS.md: ``--kind-clients dato-restore=8``);
* ``plone-revert``: ``PATCH /plone/p/<p>/<gid>/@history {"version": 0}``, which answers when
  its job has ended (at most 30 s): so at most ``--clients`` of these jobs are in the system
  at a time.

The clock runs from the first request written (connections already open) to the last of the
jobs' terminal events, read from the ``cc`` sync space with ``XREAD BLOCK`` by a thread of
the bench.  Every job must end ``done`` with no failed item; the others are reported.

The baseline, in the same run: two ``celery -A bench.noop_app worker`` processes with the
same options (prefork, concurrency 2, ``-E``, INFO logging; :mod:`bench.noop_app` has the
product's late acks, prefetch 1, no results), draining ``--jobs`` no-op tasks sent at once
(one kombu publish batch, as ``worker.app.enqueue_many`` sends); the clock runs from the
send to the last ``task-succeeded`` event.  It runs before the product's processes start and
again after they stopped; the ratio is taken to the mean of the two.

Where a small job's time goes, measured over each timed window:

* Redis commands per job, per command: ``MONITOR`` through ``redis-cli`` (filtered to the
  run's Redis database by ``grep``), because ``INFO commandstats`` counts every client of a
  shared server; commands run inside Lua scripts are counted apart.  Each command is put
  down to the web, the workers or the bench by its client's port (the processes' sockets,
  sampled every 0.25 s; a connection opened and closed between samples counts as
  ``unmapped``).  The bench's own reader of the ``cc`` space is left out.
* PostgreSQL transactions per job: ``xact_commit + xact_rollback`` of the database in
  ``pg_stat_database``, read from another database after a settle of
  ``--pg-settle`` seconds (backends report their counts when idle, within 10 s).
* CPU seconds per job: ``utime + stime`` of the web's and the workers' process trees
  (:func:`bench.loadgen.tree_cpu_seconds`), of the PostgreSQL backends serving the database,
  of the bench itself (client and reader), and of ``redis-server`` (``INFO cpu``: the whole
  server, other clients included).

Usage::

    .venv/bin/python bench/small_jobs.py                                   # SQLite
    .venv/bin/python bench/small_jobs.py --database-url postgresql://postgres@127.0.0.1:5432/bench_small

(``--jobs`` 1000, ``--clients`` 16, ``--kinds`` all three, ``--redis-url``
``redis://127.0.0.1:6379/6``.)  A PostgreSQL database is emptied first (its ``public``
schema is dropped): use a scratch database.  The per-user rate limit (``RATE_LIMIT``,
6,000 requests a minute) bounds ``--jobs`` × kinds.  Output: a markdown table, then one
JSON line; ``--out FILE`` also writes the JSON there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.catalogue_run import web  # noqa: E402
from bench.common import (  # noqa: E402
    BIN,
    ROOT,
    cleanup_redis,
    free_port,
    isolate,
    percentile,
    reset_postgres,
)
from bench.small_jobs_measure import (  # noqa: E402
    WORKERS,
    Terminals,
    Window,
    celery_workers,
    http_request,
    send_all,
)

KINDS = {"unicat-delete": "bulk_delete_records", "dato-restore": "restore_record_version",
         "plone-revert": "revert_record_version"}
CONCURRENCY = 2
WARM_UP = 16  # jobs of each kind before its timed run (and tasks before the baseline's)


def log(msg: str) -> None:
    print(f"[small_jobs {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

# -- the bench ------------------------------------------------------------------------------


def engine_version() -> str:
    """The commit measured, ``+`` when the product's files differ from it; in an export of a
    commit (``git archive``, no ``.git``) the hash in its ``.commit`` file."""
    if not (ROOT / ".git").exists() and (ROOT / ".commit").exists():
        return (ROOT / ".commit").read_text().strip()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                          capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "api", "worker", "models",
                            "bulkjobs", "stream", "cli"], cwd=ROOT).returncode != 0
    return head + ("+" if dirty else "")


def seed_project(jobs: int, kinds: list[str]) -> dict[str, Any]:
    """One project with enough live leaves for ``kinds`` × (``jobs`` + warm-up) jobs: per
    kind a list of (gid, id of its version 0)."""
    from sqlalchemy import text

    from models.engine import get_write_engine, migrate
    from models.seed import seed

    migrate()
    need = len(kinds) * (jobs + WARM_UP)
    records = 101 + 100 * (need // 90 + 1)
    with get_write_engine().begin() as conn:
        project = seed(conn, records=records, projects=1, seed_value=1,
                       deleted_every=0).projects[0]
    with get_write_engine().connect() as conn:
        leaves = [(r[0], r[1]) for r in conn.execute(text(
            "SELECT r.gid, v.id FROM record r JOIN record_version v ON v.record_id = r.id "
            "AND v.number = 0 WHERE r.project_gid = :p AND r.is_link = false AND NOT EXISTS "
            "(SELECT 1 FROM record c WHERE c.parent_id = r.id) ORDER BY r.id"),
            {"p": project.gid})]
    if len(leaves) < need:
        raise RuntimeError(f"{len(leaves)} leaves, {need} needed")
    per = jobs + WARM_UP
    return {"gid": project.gid, "api_key": project.api_key, "records": project.records,
            "targets": {k: leaves[i * per:(i + 1) * per] for i, k in enumerate(kinds)}}


def requests_for(kind: str, port: int, project: str, jwt: str,
                 targets: list[tuple[str, str]]) -> list[bytes]:
    auth = {"Authorization": f"Bearer {jwt}"}
    if kind == "unicat-delete":
        return [http_request("POST", port, f"/api/p/{project}/records/bulk/delete",
                             {"selection": [gid]}, auth) for gid, _ in targets]
    if kind == "dato-restore":
        return [http_request("POST", port, f"/dato/p/{project}/versions/{vid}/restore", None,
                             auth) for _, vid in targets]
    return [http_request("PATCH", port, f"/plone/p/{project}/{gid}/@history", {"version": 0},
                         auth) for gid, _ in targets]


def job_rows(job: str, since: float) -> list[Any]:
    """The job rows of ``job`` created since ``since`` (epoch seconds)."""
    from sqlalchemy import text

    from models.engine import get_engine

    with get_engine().connect() as conn:
        return list(conn.execute(text(
            "SELECT created_on, started_on, finished_on, attempts FROM job "
            "WHERE job = :j AND created_on >= :s"), {"j": job, "s": since}))


def timings(rows: list[Any], seconds: float) -> dict[str, Any]:
    """From the job rows: queued → started and started → finished (p50, mean), claims per
    job, and how busy the pool processes were (their jobs' run time over the window)."""
    waits = [(r.started_on - r.created_on) * 1000 for r in rows if r.started_on]
    runs = [(r.finished_on - r.started_on) * 1000 for r in rows
            if r.started_on and r.finished_on]
    n = max(len(rows), 1)
    return {
        "job_wait_ms_p50": round(percentile(waits, 50), 1),
        "job_run_ms_p50": round(percentile(runs, 50), 1),
        "job_run_ms_mean": round(sum(runs) / max(len(runs), 1), 1),
        "attempts_per_job": round(sum(r.attempts for r in rows) / n, 2),
        "pool_busy": round(sum(runs) / 1000 / (WORKERS * CONCURRENCY * seconds), 2)
        if seconds else None,
    }


def login(port: int, project: str, api_key: str) -> str:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", f"/api/p/{project}/auth", json.dumps({"api_key": api_key}),
                 {"Content-Type": "application/json"})
    answer = conn.getresponse()
    answer.read()
    jwt = answer.getheader("authorization")
    conn.close()
    if answer.status != 200 or not jwt:
        raise RuntimeError(f"auth failed: {answer.status}")
    return jwt


class Bench:
    def __init__(self, args: argparse.Namespace, data: Path) -> None:
        self.args, self.data = args, data
        self.url = os.environ["REDIS_URL"]
        self.clients = {k: args.clients for k in KINDS}
        for item in args.kind_clients:
            kind, _, n = item.partition("=")
            if kind not in KINDS or not n.isdigit():
                raise SystemExit(f"--kind-clients {item}: KIND=N, KIND one of {list(KINDS)}")
            self.clients[kind] = int(n)
        self.pg = None
        self.dbname = ""
        if args.database_url:
            from sqlalchemy import create_engine

            from models.engine import normalise_url

            parts = urlsplit(args.database_url)
            self.dbname = parts.path.lstrip("/")
            self.pg = create_engine(normalise_url(urlunsplit(parts._replace(path="/postgres"))),
                                    isolation_level="AUTOCOMMIT")

    def window(self, name: str, groups: dict[str, list[int]], skip: set[str] | None = None
               ) -> Window:
        return Window(self.url, groups, self.pg, self.dbname, self.data, name, skip or set())

    # -- raw Celery ----------------------------------------------------------------------

    def baseline(self, label: str) -> dict[str, Any]:
        from celery.events import EventReceiver

        from bench import noop_app

        n = self.args.jobs
        argv = [str(BIN / "celery"), "-A", "bench.noop_app", "worker", "-E", "--loglevel",
                "INFO", "--concurrency", str(CONCURRENCY),
                "--prefetch-multiplier", str(self.args.prefetch)]
        succeeded: dict[str, float] = {}
        lock = threading.Lock()

        def on_event(event: dict[str, Any]) -> None:
            if event.get("type") == "task-succeeded":
                with lock:
                    succeeded[event["uuid"]] = time.perf_counter()

        def send(ids: list[str]) -> None:
            with noop_app.app.producer_or_acquire() as producer, producer.batch():
                for task_id in ids:
                    noop_app.app.send_task(noop_app.TASK, args=[task_id], task_id=task_id,
                                           queue=noop_app.QUEUE, producer=producer)

        def wait(ids: list[str], timeout: float = 300) -> float:
            deadline = time.monotonic() + timeout
            while True:
                with lock:
                    got = [succeeded[i] for i in ids if i in succeeded]
                if len(got) == len(ids):
                    return max(got)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(got)} of {len(ids)} no-op tasks ended")
                time.sleep(0.005)

        with celery_workers(argv, "noop", self.data, {}) as procs, \
                noop_app.app.connection_for_read() as conn:
            receiver = EventReceiver(conn, handlers={"*": on_event}, app=noop_app.app)
            thread = threading.Thread(target=lambda: receiver.capture(limit=None, timeout=None,
                                                                      wakeup=False),
                                      daemon=True)
            thread.start()
            time.sleep(1.0)  # subscribed
            warm = [uuid.uuid4().hex for _ in range(WARM_UP)]
            send(warm)
            wait(warm)
            time.sleep(1.0)
            ids = [uuid.uuid4().hex for _ in range(n)]
            with self.window(f"celery-{label}", {"workers": [p.pid for p in procs]}) as w:
                start = time.perf_counter()
                send(ids)
                end = wait(ids)
                w.stop_clock()
            receiver.should_stop = True
            thread.join(5)
            seconds = end - start
            result = {"kind": "raw-celery", "run": label, "tasks": n,
                      "seconds": round(seconds, 3), "per_s": round(n / seconds, 1),
                      **w.report(n, self.args.pg_settle)}
        log(json.dumps(result))
        return result

    # -- the product -----------------------------------------------------------------------

    def product(self, seeded: dict[str, Any]) -> list[dict[str, Any]]:
        port = free_port()
        worker_argv = [str(BIN / "python"), "-m", "worker", "-E", "--loglevel", "INFO",
                       "--concurrency", str(CONCURRENCY),
                       "--prefetch-multiplier", str(self.args.prefetch)]
        runs = []
        with web({}, self.data, port) as web_proc, \
                celery_workers(worker_argv, "worker", self.data, {}) as workers:
            jwt = login(port, seeded["gid"], seeded["api_key"])
            terminals = Terminals(self.url, self.stream)
            groups = {"web": [web_proc.pid], "workers": [w.pid for w in workers]}
            if self.pg is not None:  # what the idle processes commit
                w = self.window("idle", groups)
                x0 = w.xacts() or 0
                time.sleep(self.args.pg_settle)
                self.idle_xacts_per_s = round(((w.xacts() or 0) - x0) / self.args.pg_settle, 2)
            try:
                for kind in self.args.kinds:
                    targets = seeded["targets"][kind]
                    warm = requests_for(kind, port, seeded["gid"], jwt, targets[:WARM_UP])
                    requests = requests_for(kind, port, seeded["gid"], jwt, targets[WARM_UP:])
                    runs.append(self.kind(kind, port, warm, requests, terminals, groups))
            finally:
                terminals.close()
        return runs

    def kind(self, kind: str, port: int, warm: list[bytes], requests: list[bytes],
             terminals: Terminals, groups: dict[str, list[int]]) -> dict[str, Any]:
        job = KINDS[kind]
        args = self.args
        clients = self.clients[kind]
        since = time.time()
        sent = asyncio.run(send_all(port, warm, clients))
        terminals.wait(job, since - 1, sent.statuses[200] + sent.statuses[202], 120)
        time.sleep(args.pg_settle if self.pg is not None else 2.0)
        with self.window(kind, groups, {terminals.addr}) as w:
            sent = asyncio.run(send_all(port, requests, clients))
            accepted = sent.statuses[200] + sent.statuses[202]
            ends = terminals.wait(job, sent.start_wall - 0.05, accepted, args.job_timeout)
            ends = {t: e for t, e in ends.items() if e["created_on"] >= sent.start_wall - 0.05}
            end = max((e["at"] for e in ends.values()), default=time.perf_counter())
            end = max(end, sent.answered)
            time.sleep(0.2)  # the last acks
            w.stop_clock()
        seconds = end - sent.start
        cost = w.report(len(ends) or 1, args.pg_settle)  # before any query of the bench's
        rows = job_rows(job, sent.start_wall - 0.05)
        not_done = [e for e in ends.values() if e["status"] != "done" or e["failed"]]
        run: dict[str, Any] = {
            "kind": kind, "job": job, "requests": len(requests), "clients": clients,
            "statuses": {str(k): v for k, v in sorted(sent.statuses.items())},
            "jobs": len(ends), "seconds": round(seconds, 3),
            "per_s": round(len(ends) / seconds, 1) if seconds else None,
            "requests_s": round(sent.answered - sent.start, 3),
            "request_ms_p50": round(percentile(sent.latencies, 50), 2),
            "request_ms_p99": round(percentile(sent.latencies, 99), 2),
            "not_done": len(not_done) + max(0, accepted - len(ends)),
            **timings(rows, seconds),
            **cost,
        }
        if not_done:
            run["not_done_sample"] = not_done[:3]
        if sent.errors:
            run["errors_sample"] = sent.errors
        log(json.dumps(run))
        return run

    def run(self) -> dict[str, Any]:
        from bulkjobs import keys

        args = self.args
        self.stream = keys.sync_stream(keys.CC_SPACE)
        report: dict[str, Any] = {
            "bench": "small_jobs", "database": "postgresql" if self.pg is not None else "sqlite",
            "commit": engine_version(), "jobs": args.jobs, "clients": args.clients,
            "workers": WORKERS, "concurrency": CONCURRENCY, "prefetch": args.prefetch,
            "load_start": os.getloadavg(),
        }
        log(f"seeding ({report['database']}) in {self.data}")
        seeded = seed_project(args.jobs, args.kinds)
        report["records"] = seeded["records"]
        report["baseline"] = [self.baseline("before")]
        report["runs"] = self.product(seeded)
        if self.pg is not None:
            report["pg_idle_xacts_per_s"] = self.idle_xacts_per_s
        report["baseline"].append(self.baseline("after"))
        report["load_end"] = os.getloadavg()
        rate = sum(b["per_s"] for b in report["baseline"]) / len(report["baseline"])
        report["baseline_per_s"] = round(rate, 1)
        for run in report["runs"]:
            run["ratio"] = round(run["per_s"] / rate, 3) if run["per_s"] else None
        return report


def markdown(report: dict[str, Any]) -> str:
    pg = report["database"] == "postgresql"
    head = ("| database | kind | jobs/s | ratio to raw Celery | request p50 / p99 ms | "
            "not done | Redis commands / job (+ in Lua) | "
            + ("PG xacts / job | " if pg else "")
            + "CPU ms / job: web, workers" + (", postgres" if pg else "") + ", redis |")
    cols = head.count("|") - 1
    lines = [head, "|" + "---|" * cols]
    for run in [*report["runs"], *report["baseline"]]:
        cpu = run["cpu_ms_per_job"]
        parts = [f"{cpu.get('web', 0):.2f}" if "web" in cpu else "–",
                 f"{cpu['workers']:.2f}"]
        if pg:
            parts.append(f"{cpu.get('postgres', 0):.2f}")
        parts.append(f"{run['redis_server_cpu_ms_per_job']:.2f}")
        baseline = run["kind"] == "raw-celery"
        name = (f"raw Celery no-op ({run['run']})" if baseline
                else f"{run['kind']} ({run['clients']} clients)")
        row = [report["database"], name, f"{run['per_s']:,.1f}",
               "1" if baseline else f"{run['ratio']:.3f}",
               "–" if baseline else f"{run['request_ms_p50']:.1f} / {run['request_ms_p99']:.1f}",
               "–" if baseline else str(run["not_done"]),
               f"{run['redis_commands_per_job']:.1f} (+{run['redis_lua_commands_per_job']:.1f})"]
        if pg:
            row.append("–" if baseline else f"{run.get('pg_xacts_per_job', float('nan')):.2f}")
            if baseline:
                parts[2] = "–"
        row.append(", ".join(parts))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--kinds", nargs="+", choices=list(KINDS), default=list(KINDS))
    ap.add_argument("--kind-clients", nargs="*", default=[], metavar="KIND=N",
                    help="another number of clients for a kind")
    ap.add_argument("--database-url", default="", help="PostgreSQL (default: SQLite)")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/6")
    ap.add_argument("--job-timeout", type=float, default=600)
    ap.add_argument("--pg-settle", type=float, default=11.0,
                    help="seconds before reading PostgreSQL's transaction counts")
    ap.add_argument("--prefetch", type=int, default=1,
                    help="the workers' --prefetch-multiplier, product and baseline alike "
                         "(the product's is 1)")
    ap.add_argument("--out", default="", help="also write the JSON report to this file")
    args = ap.parse_args()
    os.environ["REDIS_URL"] = args.redis_url
    os.environ["PYTHONPATH"] = str(ROOT)  # the processes run this tree's code
    data = isolate(args.database_url or None)
    if args.database_url:
        reset_postgres(args.database_url)
    try:
        report = Bench(args, data).run()
    finally:
        cleanup_redis()
        from bench.catalogue import _cleanup_redis

        _cleanup_redis(os.environ["REDIS_PREFIX"])
    table = markdown(report)
    print(table)
    print(json.dumps(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
