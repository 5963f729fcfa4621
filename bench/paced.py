"""The same requests back to back and paced (a pause after each), against a real web process
with nothing else running: what a pause between requests costs on this machine.

A probe that sends one request every 50 ms (the catalogue's submit probe, 20 a second) meets
a process, and CPUs, that went idle in between; sent back to back, the same requests find
everything warm.  Three requests, each ``--requests`` times per pause (``--pauses``, ms):

* ``livez``: ``GET /livez``, answered by the event loop alone;
* ``records/get``: ``POST /api/p/<p>/records/get`` of one record (a read);
* ``submit``: ``POST /api/p/<p>/records/bulk/delete`` of one gid (a job queued: its row, its
  ``queued`` event, its Celery message, to a queue no worker reads).

One keep-alive ``http.client`` connection; each latency is request written → answer read.
Prints a table and one JSON line.  Nothing here asserts a time::

    .venv/bin/python bench/paced.py                      # SQLite, 2,000 records
    .venv/bin/python bench/paced.py --pauses 0 5 50 200
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import cleanup_redis, free_port, isolate, median, percentile  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=2000)
    ap.add_argument("--requests", type=int, default=200, help="per request kind and pause")
    ap.add_argument("--pauses", type=float, nargs="+", default=[0, 50], help="ms")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/6")
    args = ap.parse_args()
    data = isolate(None, REDIS_URL=args.redis_url, LOG_LEVEL="WARNING")
    try:
        result = measure(args, data)
    finally:
        cleanup_redis()
    print(json.dumps(result))


def measure(args: argparse.Namespace, data: Path) -> dict[str, Any]:
    from sqlalchemy import text

    from bench.catalogue_run import web
    from models.engine import get_engine, get_write_engine, migrate
    from models.seed import seed

    migrate(get_engine())
    with get_write_engine().begin() as conn:
        project = seed(conn, records=args.records, projects=1, seed_value=7,
                       deleted_every=0).projects[0]
    with get_engine().connect() as conn:
        gids = list(conn.execute(text(
            "SELECT gid FROM record WHERE project_gid = :p AND parent_id IS NOT NULL LIMIT 1000"
        ), {"p": project.gid}).scalars())
    env = dict(os.environ)
    env["REDIS_PREFIX"] += "web"  # its jobs' messages go to a queue no worker reads
    port = free_port()
    with web(env, data, port):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("POST", f"/api/p/{project.gid}/auth", json.dumps(
            {"api_key": project.api_key}), {"Content-Type": "application/json"})
        answer = conn.getresponse()
        answer.read()
        headers = {"Content-Type": "application/json",
                   "Authorization": f"Bearer {answer.getheader('authorization')}"}
        requests = {
            "livez": ("GET", "/livez", None),
            "records/get": ("POST", f"/api/p/{project.gid}/records/get", "record"),
            "submit": ("POST", f"/api/p/{project.gid}/records/bulk/delete", "selection"),
        }
        rows = []
        for name, (method, path, field) in requests.items():
            for pause in args.pauses:
                latencies = []
                for i in range(args.requests):
                    gid = gids[i % len(gids)]
                    body = None if field is None else json.dumps(
                        {field: [gid] if field == "selection" else gid})
                    started = time.perf_counter()
                    conn.request(method, path, body, headers)
                    reply = conn.getresponse()
                    reply.read()
                    latencies.append((time.perf_counter() - started) * 1000)
                    if reply.status != 200:
                        raise RuntimeError(f"{name}: {reply.status}")
                    time.sleep(pause / 1000)
                rows.append({"request": name, "pause_ms": pause,
                             "p50_ms": round(median(latencies), 2),
                             "p99_ms": round(percentile(latencies, 99), 2)})
                print(f"{name:<12} pause {pause:5.0f} ms: p50 {rows[-1]['p50_ms']:6.2f} ms, "
                      f"p99 {rows[-1]['p99_ms']:6.2f} ms", flush=True)
    return {"bench": "paced", "records": args.records, "requests": args.requests,
            "load": [round(x, 2) for x in os.getloadavg()], "rows": rows}


if __name__ == "__main__":
    main()
