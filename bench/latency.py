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
  ``processing`` (between its ``started_on`` and ``finished_on``), p50 / p99 / max per kind;
  and the job's records per second (records deleted / (finished_on - started_on)).

Nothing here asserts a time.  Usage::

    .venv/bin/python bench/latency.py --records 100000
    .venv/bin/python bench/latency.py --records 1000000 --selection heads
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
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
    args = ap.parse_args()
    if args.scratch:
        Path(args.scratch).mkdir(parents=True, exist_ok=True)
        tempfile.tempdir = args.scratch
    extra = {"RECORD_EVENTS": args.record_events, "RATE_LIMIT": "0"}
    if args.batch_size:
        extra["BATCH_SIZE"] = str(args.batch_size)
    data = isolate(None, **extra)

    import httpx
    from sqlalchemy import text

    from models.engine import get_engine, get_write_engine, migrate
    from models.seed import seed

    migrate()
    t0 = time.perf_counter()
    with get_write_engine().begin() as conn:
        big = seed(conn, records=args.records, projects=1, deleted_every=0).projects[0]
    with get_write_engine().begin() as conn:
        small = seed(conn, records=101, projects=1, deleted_every=0).projects[0]
    log(f"seeded {args.records} + 101 records in {time.perf_counter() - t0:.1f} s")

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
        samples: dict[str, list[tuple[float, float]]] = {k: [] for k in KINDS}
        stop = threading.Event()
        token: dict[str, str] = {}
        threads = [threading.Thread(target=_load, daemon=True,
                                    args=(kind, base, jwt, big, small, token, args.interval,
                                          samples[kind], stop)) for kind in KINDS]
        r = client.post(f"/api/p/{big.gid}/records/bulk/delete",
                        headers={"Authorization": f"Bearer {jwt[big.gid]}"},
                        json={"selection": selection})
        token["big"] = r.json()["result"]["job.token"]
        for th in threads:
            th.start()
        with get_engine().connect() as conn:
            while True:
                row = conn.execute(text("SELECT status, started_on, finished_on, info FROM job "
                                        "WHERE token = :t"), {"t": token["big"]}).one()
                conn.rollback()
                if row.status in ("done", "rejected"):
                    break
                time.sleep(0.2)
        time.sleep(args.interval * 3)
        stop.set()
        for th in threads:
            th.join()
        with get_engine().connect() as conn:
            deleted = _deleted(conn, big.gid) - deleted_before
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
        during = [ms for at, ms in samples[kind] if row.started_on <= at <= row.finished_on]
        stats = {"n": len(during), "p50_ms": round(percentile(during, 50), 2),
                 "p99_ms": round(percentile(during, 99), 2),
                 "max_ms": round(max(during), 2) if during else None}
        result[kind] = stats
        print(f"{kind:<10}n={stats['n']:<5} p50 {stats['p50_ms']:8.2f} ms   "
              f"p99 {stats['p99_ms']:8.2f} ms   max {stats['max_ms']} ms")
    print(json.dumps(result))


def _ready(worker_log: Path) -> bool:
    return worker_log.exists() and b"ready" in worker_log.read_bytes()


def _deleted(conn: Any, project_gid: str) -> int:
    from sqlalchemy import text

    return int(conn.execute(text(
        "SELECT COUNT(*) FROM record_deletion d JOIN record r ON r.id = d.record_id "
        "WHERE r.project_gid = :p"), {"p": project_gid}).scalar_one())


def _load(kind: str, base: str, jwt: dict[str, str], big: Any, small: Any,
          token: dict[str, str], interval: float, out: list[tuple[float, float]],
          stop: threading.Event) -> None:
    """Send one kind of request every ``interval`` seconds (open loop: a late request is sent
    at once, the schedule is kept) and keep (wall time sent, latency in ms)."""
    import httpx

    small_auth = {"Authorization": f"Bearer {jwt[small.gid]}"}
    big_auth = {"Authorization": f"Bearer {jwt[big.gid]}"}
    last_small: str | None = None
    cursor = 0
    with httpx.Client(base_url=base, timeout=120) as client:
        next_at = time.perf_counter()
        n = 0
        while not stop.is_set():
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            next_at += interval
            sent, start = time.time(), time.perf_counter()
            if kind == "submit":
                gid = small.heads[n % len(small.heads)]
                r = client.post(f"/api/p/{small.gid}/records/bulk/delete", headers=small_auth,
                                json={"selection": [gid]})
            elif kind == "cancel":
                if last_small is None:
                    r = client.post(f"/api/p/{small.gid}/records/bulk/delete",
                                    headers=small_auth, json={"selection": []})
                    last_small = r.json()["result"]["job.token"]
                    continue
                r = client.post(f"/api/p/{small.gid}/jobs/cancel", headers=small_auth,
                                json={"job": last_small})
            elif kind == "get":
                r = client.post(f"/api/p/{big.gid}/jobs/get", headers=big_auth,
                                json={"job": token["big"]})
            else:
                if not cursor:  # from now on: the log's tail, not its whole history
                    cursor = client.post("/sync/cursors", headers=big_auth,
                                         json={}).json()["result"]["cc.cursor"]
                    continue
                r = client.post("/sync/get", headers=big_auth, json={"cc_cursor": cursor})
            ms = (time.perf_counter() - start) * 1000
            if r.status_code != 200:
                log(f"{kind}: HTTP {r.status_code} {r.text[:200]}")
            out.append((sent, ms))
            n += 1


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
