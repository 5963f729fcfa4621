"""Writers beside a bulk job: how long small requests wait while a big job runs (SQLite).

What is measured, in one run on one machine:

* a project of ``--records`` records is seeded (:func:`models.seed.seed`), with a small
  second project beside it;
* real web (``uvicorn api.app:app``) and worker (``celery -A worker.app worker``,
  concurrency 1) processes are started;
* a bulk delete of the big project is queued through the API: ``[{"children": <root>}]``
  (``--selection children``) or the 10,000 subtree heads as plain gids (``heads``);
* meanwhile, each at a steady rate (``--interval`` seconds between requests of one kind),
  from a thread of its own: one-gid ``records/bulk/delete`` submits to the *other* project,
  ``jobs/cancel`` of the previous such submit, ``jobs/get`` of the big job and ``/sync/get``;
* the answers' latencies are kept for the requests sent while the big job was
  ``processing`` (between its ``started_on`` and ``finished_on``), p50 / p99 / max per kind,
  from the moment each was sent, and also from the moment it was *due* on the steady
  schedule (``late``: a request held up delays the ones after it on its thread, which this
  counts in, as wrk2 does); failed requests (an error status, or no answer within
  ``--timeout``) are counted apart; and the job's records per second (records deleted /
  (finished_on - started_on)).

Nothing here asserts a time.  Usage::

    .venv/bin/python bench/latency.py --records 100000
    .venv/bin/python bench/latency.py --records 1000000 --selection heads
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import BIN, cleanup_redis, free_port, isolate, percentile, process  # noqa: E402

KINDS = ("submit", "cancel", "get", "sync")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--selection", choices=("children", "heads"), default="children")
    ap.add_argument("--interval", type=float, default=0.1,
                    help="seconds between two requests of one kind")
    ap.add_argument("--batch-size", type=int, default=None, help="BATCH_SIZE (default: the "
                    "product's default)")
    ap.add_argument("--scratch", default=os.environ.get("BENCH_SCRATCH"),
                    help="directory for the data dir (default: the system's temp dir)")
    ap.add_argument("--record-events", choices=("true", "false"), default="true")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds a request may take")
    ap.add_argument("--seed-cache", default=None, help="keep the seeded database in this "
                    "directory and start from a copy of it when it is there (JWT_SECRET too)")
    ap.add_argument("--max-seconds", type=float, default=0, help="stop measuring after the job "
                    "has processed this long (0: until it ends); records/s then counts the "
                    "records deleted so far")
    args = ap.parse_args()
    if args.scratch:
        Path(args.scratch).mkdir(parents=True, exist_ok=True)
        tempfile.tempdir = args.scratch
    extra = {"RECORD_EVENTS": args.record_events, "RATE_LIMIT": "0"}
    cache = Path(args.seed_cache) / f"latency-{args.records}" if args.seed_cache else None
    if cache is not None:
        extra["JWT_SECRET"] = "bench-latency-seed-cache"  # the API keys are the seed's
    if args.batch_size:
        extra["BATCH_SIZE"] = str(args.batch_size)
    data = isolate(None, **extra)

    import httpx
    from sqlalchemy import text

    from models.engine import get_engine, get_write_engine, migrate
    from models.seed import SeededProject, seed

    t0 = time.perf_counter()
    if cache is not None and (cache / "projects.json").exists():
        shutil.copyfile(cache / "bench.db", data / "bench.db")
        big, small = (SeededProject(**p) for p in json.loads((cache / "projects.json")
                                                               .read_text()))
        migrate()
        log(f"copied the seeded database in {time.perf_counter() - t0:.1f} s")
    else:
        migrate()
        with get_write_engine().begin() as conn:
            big = seed(conn, records=args.records, projects=1, deleted_every=0).projects[0]
        with get_write_engine().begin() as conn:
            small = seed(conn, records=101, projects=1, deleted_every=0).projects[0]
        log(f"seeded {args.records} + 101 records in {time.perf_counter() - t0:.1f} s")
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
            with get_engine().connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            shutil.copyfile(data / "bench.db", cache / "bench.db")
            (cache / "projects.json").write_text(json.dumps([vars(big), vars(small)]))

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    web_cmd = [str(BIN / "python"), "-m", "uvicorn", "api.app:app", "--host", "127.0.0.1",
               "--port", str(port), "--no-access-log", "--log-level", "warning"]
    worker_cmd = [str(BIN / "celery"), "-A", "worker.app", "worker", "--loglevel", "INFO",
                  "--concurrency", "1", "--without-mingle", "--without-gossip",
                  "--hostname", f"bench-{time.time_ns()}@%h"]
    with process(web_cmd, ready=lambda: httpx.get(f"{base}/healthz").status_code == 200,
                 log=data / "web.log"), \
            process(worker_cmd, ready=lambda: _ready(data / "worker.log"),
                    log=data / "worker.log"):
        time.sleep(1.0)  # the consumer connects after the pool is up
        client = httpx.Client(base_url=base, timeout=120)
        jwt = {p.gid: client.post(f"/api/p/{p.gid}/auth", json={"api_key": p.api_key})
               .headers["authorization"] for p in (big, small)}
        selection: list[Any] = ([{"children": big.root}] if args.selection == "children"
                                else list(big.heads))
        with get_engine().connect() as conn:
            deleted_before = _deleted(conn, big.gid)
        samples: dict[str, list[tuple[float, float, float, bool]]] = {k: [] for k in KINDS}
        stop = threading.Event()
        token: dict[str, str] = {}
        threads = [threading.Thread(target=_load, daemon=True,
                                    args=(kind, base, jwt, big, small, token, args.interval,
                                          samples[kind], stop, args.timeout))
                   for kind in KINDS]
        r = client.post(f"/api/p/{big.gid}/records/bulk/delete",
                        headers={"Authorization": f"Bearer {jwt[big.gid]}"},
                        json={"selection": selection})
        token["big"] = r.json()["result"]["job.token"]
        for th in threads:
            th.start()
        with get_engine().connect() as conn:
            while True:
                row: Any = conn.execute(text(
                    "SELECT status, started_on, finished_on, info FROM job WHERE token = :t"),
                    {"t": token["big"]}).one()
                conn.rollback()
                if row.status in ("done", "rejected"):
                    break
                if (args.max_seconds and row.started_on
                        and time.time() - row.started_on > args.max_seconds):
                    row = SimpleNamespace(**{**row._asdict(), "finished_on": time.time()})
                    break
                time.sleep(0.2)
        time.sleep(args.interval * 3)
        stop.set()
        for th in threads:
            th.join()
        with get_engine().connect() as conn:
            deleted = _deleted(conn, big.gid) - deleted_before
        if row.status not in ("done", "rejected"):  # --max-seconds: as far as it got
            with get_engine().connect() as conn:
                deleted = _deleted(conn, big.gid) - deleted_before
            client.post(f"/api/p/{big.gid}/jobs/cancel", json={"job": token["big"]},
                        headers={"Authorization": f"Bearer {jwt[big.gid]}"}, timeout=600)
        load = os.getloadavg()
    cleanup_redis()

    seconds = row.finished_on - row.started_on
    result: dict[str, Any] = {
        "bench": "latency", "records": args.records, "selection": args.selection,
        "job_status": row.status, "job_seconds": round(seconds, 2),
        "records_deleted": deleted, "job_records_per_s": round(deleted / seconds),
        "interval": args.interval, "loadavg_after": [round(x, 2) for x in load],
    }
    print(f"{'job':<10}{row.status}: {deleted} records in {seconds:.2f} s "
          f"= {deleted / seconds:,.0f} records/s")
    for kind in KINDS:
        during = [s for s in samples[kind] if row.started_on <= s[0] <= row.finished_on]
        ok = [ms for _, ms, _, good in during if good]
        late = [ms for _, _, ms, good in during if good]
        stats = {"n": len(during), "failed": len(during) - len(ok),
                 "p50_ms": round(percentile(ok, 50), 2), "p99_ms": round(percentile(ok, 99), 2),
                 "max_ms": round(max(ok), 2) if ok else None,
                 "late_p50_ms": round(percentile(late, 50), 2),
                 "late_p99_ms": round(percentile(late, 99), 2)}
        result[kind] = stats
        print(f"{kind:<8}n={stats['n']:<5} failed {stats['failed']:<4} p50 {stats['p50_ms']:8.2f}"
              f"  p99 {stats['p99_ms']:8.2f}  max {stats['max_ms']} ms   from due: p50 "
              f"{stats['late_p50_ms']:.2f}  p99 {stats['late_p99_ms']:.2f} ms")
    print(json.dumps(result))


def _ready(worker_log: Path) -> bool:
    return worker_log.exists() and b"ready" in worker_log.read_bytes()


def _deleted(conn: Any, project_gid: str) -> int:
    from sqlalchemy import text

    return int(conn.execute(text(
        "SELECT COUNT(*) FROM record_deletion d JOIN record r ON r.id = d.record_id "
        "WHERE r.project_gid = :p"), {"p": project_gid}).scalar_one())


def _load(kind: str, base: str, jwt: dict[str, str], big: Any, small: Any,
          token: dict[str, str], interval: float,
          out: list[tuple[float, float, float, bool]], stop: threading.Event,
          timeout: float) -> None:
    """Send one kind of request every ``interval`` seconds (a late request is sent at once,
    the schedule is kept) and keep (wall time sent, ms from sent, ms from due, answered)."""
    import httpx

    small_auth = {"Authorization": f"Bearer {jwt[small.gid]}"}
    big_auth = {"Authorization": f"Bearer {jwt[big.gid]}"}
    last_small: str | None = None
    cursor = 0
    with httpx.Client(base_url=base, timeout=timeout) as client:
        next_at = time.perf_counter()
        n = 0
        while not stop.is_set():
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            due, next_at = next_at, next_at + interval
            sent, start = time.time(), time.perf_counter()
            try:
                r = _request(client, kind, n, small, big, small_auth, big_auth, token,
                             last_small, cursor)
            except httpx.HTTPError as exc:
                log(f"{kind}: {exc!r}")
                out.append((sent, 0.0, 0.0, False))
                continue
            end = time.perf_counter()
            n += 1
            if r is None:  # a set-up request: the job to cancel, the cursor to read from
                continue
            if isinstance(r, tuple):
                last_small, cursor = r
                continue
            if r.status_code != 200:
                log(f"{kind}: HTTP {r.status_code} {r.text[:200]}")
            out.append((sent, (end - start) * 1000, (end - due) * 1000, r.status_code == 200))


def _request(client: Any, kind: str, n: int, small: Any, big: Any, small_auth: dict[str, str],
             big_auth: dict[str, str], token: dict[str, str], last_small: str | None,
             cursor: int) -> Any:
    """One request of ``kind``; a tuple (job to cancel, cursor) while setting up."""
    if kind == "submit":
        gid = small.heads[n % len(small.heads)]
        return client.post(f"/api/p/{small.gid}/records/bulk/delete",
                           headers=small_auth, json={"selection": [gid]})
    if kind == "cancel":
        if last_small is None:
            r = client.post(f"/api/p/{small.gid}/records/bulk/delete",
                            headers=small_auth, json={"selection": []})
            return (r.json()["result"]["job.token"], cursor) if r.status_code == 200 \
                else None
        return client.post(f"/api/p/{small.gid}/jobs/cancel", headers=small_auth,
                           json={"job": last_small})
    if kind == "get":
        return client.post(f"/api/p/{big.gid}/jobs/get", headers=big_auth,
                           json={"job": token["big"]})
    if not cursor:  # from now on: the log's tail, not its whole history
        r = client.post("/sync/cursors", headers=big_auth, json={})
        return (last_small, r.json()["result"]["cc.cursor"]) if r.status_code == 200 \
            else None
    return client.post("/sync/get", headers=big_auth, json={"cc_cursor": cursor})


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
