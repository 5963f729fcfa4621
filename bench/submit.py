"""P8: queueing through the API.

Measures, in one run:

* **baseline** — raw Celery: ``send_task`` (what ``apply_async`` does) of a task carrying one
  token, from ``--concurrency`` threads, into a queue nobody consumes;
* **api** — ``POST /api/p/<project>/records/bulk/delete`` with a one-gid selection against a
  real uvicorn web process (``--web-workers``), over ``--concurrency`` keep-alive connections
  of :func:`bench.loadgen.hammer` (a lean client: ``httpx`` would spend as much CPU per
  request as the server): each request authenticates the JWT, is counted against the rate
  limit, checks membership, validates the selection, writes the job row, appends the
  ``queued`` event and sends the Celery task (:mod:`api.queueing` batches concurrent ones);
  the web processes' CPU per request is reported beside the baseline's CPU per send;
* **latency** — submit → ``queued`` event seen by a Redis stream reader (XREAD BLOCK), one
  request at a time, p50/p99.

Usage: ``.venv/bin/python bench/submit.py [--requests 2000] [--concurrency 16]
[--web-workers 1] [--database-url postgresql://…] [--py-spy DIR]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (  # noqa: E402
    BIN,
    cleanup_redis,
    free_port,
    isolate,
    median,
    percentile,
    process,
    profiled,
    reset_postgres,
)
from bench.loadgen import hammer, post_bytes, tree_cpu_seconds  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--latency-samples", type=int, default=300)
    ap.add_argument("--web-workers", type=int, default=1)
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--py-spy", metavar="DIR", help="profile the web process into DIR/api.txt")
    args = ap.parse_args()
    data = isolate(args.database_url)
    if args.database_url:
        reset_postgres(args.database_url)

    import httpx
    from celery import Celery

    from bulkjobs import keys
    from bulkjobs.connections import get_redis
    from bulkjobs.settings import get_settings
    from models.engine import get_write_engine, migrate
    from models.seed import seed

    migrate()
    with get_write_engine().begin() as conn:
        demo = seed(conn, records=101, projects=1)
    project = demo.projects[0]
    gid = project.heads[0]

    # -- baseline: raw Celery send_task --------------------------------------------------
    celery = Celery("bench", broker=get_settings().effective_broker_url)
    scratch = keys.prefix() + "-scratch"
    per_thread = args.requests // args.concurrency

    def producer() -> None:
        for _ in range(per_thread):
            celery.send_task("bench.noop", args=[str(uuid.uuid4())], queue=scratch)

    celery.send_task("bench.noop", args=["warm-up"], queue=scratch)
    threads = [threading.Thread(target=producer) for _ in range(args.concurrency)]
    t0, cpu0 = time.perf_counter(), time.process_time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    baseline_rate = per_thread * args.concurrency / (time.perf_counter() - t0)
    baseline_cpu_us = (time.process_time() - cpu0) * 1e6 / (per_thread * args.concurrency)

    # -- the API ---------------------------------------------------------------------------
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [str(BIN / "python"), "-m", "uvicorn", "api.app:app", "--host", "127.0.0.1",
           "--port", str(port), "--no-access-log", "--log-level", "warning",
           "--workers", str(args.web_workers)]
    with process(cmd, ready=lambda: httpx.get(f"{base}/healthz").status_code == 200,
                 log=data / "web.log") as web:
        r = httpx.post(f"{base}/api/p/{project.gid}/auth", json={"api_key": project.api_key})
        jwt = r.headers["authorization"]
        headers = {"Authorization": f"Bearer {jwt}"}
        path = f"/api/p/{project.gid}/records/bulk/delete"
        url = base + path
        body = {"selection": [gid]}
        request = post_bytes("127.0.0.1", port, path, body, headers)
        asyncio.run(hammer("127.0.0.1", port, request, requests=50,
                           concurrency=args.concurrency))  # warm-up
        with profiled(args.py_spy, web.pid, "api"):
            cpu0 = tree_cpu_seconds(web.pid)
            api_rate, statuses = asyncio.run(hammer(
                "127.0.0.1", port, request, requests=args.requests,
                concurrency=args.concurrency))
            web_cpu_us = (tree_cpu_seconds(web.pid) - cpu0) * 1e6 / args.requests
        failures = args.requests - statuses.get(200, 0)

        # -- latency: submit -> queued event ----------------------------------------------
        seen: dict[str, float] = {}
        stop = threading.Event()
        stream = keys.sync_stream(keys.CC_SPACE)

        def reader() -> None:
            r = get_redis()
            last = "$"
            while not stop.is_set():
                got = r.xread({stream: last}, block=200, count=1000)
                now = time.perf_counter()
                for _, entries in got or []:
                    for entry_id, fields in entries:
                        last = entry_id
                        seen.setdefault(fields[b"k"].decode(), now)

        th = threading.Thread(target=reader, daemon=True)
        th.start()
        time.sleep(0.3)
        latencies = []
        with httpx.Client(timeout=30) as client:
            for _ in range(args.latency_samples):
                start = time.perf_counter()
                token = client.post(url, json=body, headers=headers).json()["result"]["job.token"]
                while token not in seen:
                    time.sleep(0.0002)
                latencies.append((seen[token] - start) * 1000)
        stop.set()
        th.join()
    cleanup_redis()

    db = "PostgreSQL" if args.database_url else "SQLite"
    result = {
        "bench": "submit", "database": db, "requests": args.requests,
        "concurrency": args.concurrency, "web_workers": args.web_workers,
        "baseline_celery_send_per_s": round(baseline_rate, 1),
        "baseline_cpu_us_per_send": round(baseline_cpu_us),
        "api_requests_per_s": round(api_rate, 1), "api_failures": failures,
        "web_cpu_us_per_request": round(web_cpu_us),
        "ratio_api_to_baseline": round(api_rate / baseline_rate, 3),
        "queued_event_latency_ms_p50": round(median(latencies), 2),
        "queued_event_latency_ms_p99": round(percentile(latencies, 99), 2),
    }
    print(f"{'database':<28}{db}")
    print(f"{'raw Celery send_task':<28}{baseline_rate:10.1f} /s  "
          f"({baseline_cpu_us:.0f} µs CPU per send)")
    print(f"{'API bulk requests':<28}{api_rate:10.1f} /s  ({failures} failed; "
          f"{web_cpu_us:.0f} µs web CPU per request)")
    print(f"{'ratio':<28}{api_rate / baseline_rate:10.3f}   (target >= 0.5)")
    print(f"{'submit -> queued p50 / p99':<28}{result['queued_event_latency_ms_p50']:10.2f} /"
          f" {result['queued_event_latency_ms_p99']:.2f} ms   (target p50 <= 5 ms)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
