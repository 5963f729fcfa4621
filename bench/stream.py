"""P4–P7: the stream relay under load, beside raw baselines from the same run.

Every party is a process of its own: the stream server (``python -m stream``, as deployed),
an appender (``SyncLog.append`` of one job's progress events, the send time in
``info["t"]``), and a few client processes holding the subscribers (asyncio + the
``websockets`` client, many connections per process).  Clients take ``time.time()`` when a
frame is handed to the connection (its ``process_event``, before any queueing in the client)
and count every event they get; the machine has one clock, so receive − send is the latency.

Measured, per subscriber count (``--subscribers``, plus ``--p5`` for the memory run):

* **P4** — latency of a steady stream of one job's progress events (``--rate``/s for
  ``--seconds``, then ``--rate2``/s, PROGRESS_INTERVAL's pace), append → receive, p50/p99
  over every delivery, and the median over events of each event's first and last delivery;
* **P5** — server RSS (``VmRSS``) before and after the subscribers connected, per connection;
* **P6** — server CPU (``utime + stime``) per delivered event, during a burst (events appended
  as fast as the appender can, ``--burst-batch`` per append) and during the steady stream;
* **P7** — resume with an old ``cc_cursor`` after ``--replay-events`` events were missed:
  subscribe sent → last replayed event received (and connect → last event).

Baselines in the same run:

* **raw websockets** — a minimal ``websockets.asyncio.server`` that XREADs the same Redis
  stream and ``websockets.broadcast``-s one frame per read batch to every connection (no auth,
  no subscriptions, no per-connection state), driven by the same appender and clients;
* **raw Redis** — the same appender, one ``XREAD BLOCK`` reader: append → read latency;
* for P7, one ``XRANGE`` of the same number of entries.

And a job's record events followed live (``--records``, default 1,000,000; 0: none;
``--records-only`` runs just that): appended as a worker appends them (packed), received
by ``--record-subscribers`` project subscribers of a fresh server — time, server CPU per
delivery, frames, whether any was closed, and the sync log's Redis memory for them.

Client processes run uvloop when it is installed (it comes with ``uvicorn[standard]``), so
that receiving costs them as little as it can; the servers run the default asyncio loop, as
``python -m stream`` does.  ``--py-spy DIR`` samples the stream server with py-spy during the
steady and burst phases (collapsed stacks, one file per phase).  Every loop is bounded; the
script stops its processes and deletes its Redis keys (its own ``REDIS_PREFIX``) and data
dir.  Nothing here asserts a time.

Usage: ``.venv/bin/python bench/stream.py [--quick] [--subscribers 10,100,1000] [--p5 10000]
[--rate 50] [--seconds 10] [--py-spy DIR]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import cleanup_redis, isolate  # noqa: E402
from bench.stream_measure import (  # noqa: E402
    measure_records,
    measure_redis,
    measure_replay,
    measure_size,
)
from bench.stream_roles import (  # noqa: E402
    appender_role,
    client_role,
    loadavg,
    raise_nofile,
    raw_server_role,
)

TARGET_P99 = {10: 5.0, 100: 25.0, 1000: 100.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--role", choices=["main", "client", "appender", "raw-server"],
                    default="main", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="small sizes: 10,100 and P5 at 1000")
    ap.add_argument("--subscribers", default="10,100,1000")
    ap.add_argument("--p5", type=int, default=10000, help="subscribers of the memory run (0: none)")
    ap.add_argument("--rate", type=float, default=50.0, help="steady progress events per second")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rate2", type=float, default=10.0,
                    help="a second steady rate per P4 size (PROGRESS_INTERVAL's 10/s); 0: none")
    ap.add_argument("--p5-rate", type=float, default=2.0)
    ap.add_argument("--p5-seconds", type=float, default=10.0)
    ap.add_argument("--burst", type=int, default=20000, help="most events of a burst")
    ap.add_argument("--burst-min", type=int, default=200)
    ap.add_argument("--burst-deliveries", type=int, default=2_000_000,
                    help="burst size is this divided by the subscribers, within the bounds")
    ap.add_argument("--burst-batch", type=int, default=10, help="events per append in a burst")
    ap.add_argument("--idle", type=float, default=3.0, help="seconds of idle CPU measurement")
    ap.add_argument("--clients", type=int, default=4, help="client processes (at most)")
    ap.add_argument("--replays", type=int, default=20)
    ap.add_argument("--replay-events", type=int, default=1000)
    ap.add_argument("--records", type=int, default=1_000_000,
                    help="record events of one job followed live by project subscribers (0: none)")
    ap.add_argument("--record-subscribers", type=int, default=1)
    ap.add_argument("--records-only", action="store_true",
                    help="only the record-events run (no P4–P7)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the raw websockets runs")
    ap.add_argument("--keep-data", action="store_true")
    ap.add_argument("--py-spy", metavar="DIR", help="profile the stream server into DIR")
    # roles' own options
    ap.add_argument("--kind", default="stream")
    ap.add_argument("--url")
    ap.add_argument("--conns", type=int, default=0)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--jwt")
    ap.add_argument("--project")
    ap.add_argument("--lifetime", type=float, default=3600)
    ap.add_argument("--phase")
    ap.add_argument("--count", type=int, default=0)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=1)
    ap.add_argument("--lat", action="store_true")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()

    if args.role == "client":
        raise_nofile()
        return client_role(args)
    if args.role == "appender":
        return appender_role(args)
    if args.role == "raw-server":
        raise_nofile()
        return raw_server_role(args)

    if args.quick:
        args.subscribers, args.p5, args.seconds, args.replays = "10,100", 1000, 5.0, 10
    sizes = [int(s) for s in args.subscribers.split(",") if s]
    nofile = raise_nofile()
    data = isolate()
    load0 = loadavg()

    from bulkjobs import tokens
    from bulkjobs.connections import get_redis
    from bulkjobs.synclog import SyncLog
    from models.engine import get_write_engine, migrate
    from models.seed import seed

    migrate()
    with get_write_engine().begin() as conn:
        demo = seed(conn, records=10, projects=1)
    owner = demo.users[0]
    ctx = {"data": data, "project": demo.projects[0].gid,
           "jwt": tokens.issue(owner.gid, ops=owner.ops)}
    SyncLog(get_redis()).cursors("cc")

    rows: list[dict[str, Any]] = []
    kinds = ["stream"] + ([] if args.no_baseline else ["raw"])
    records: dict[str, Any] | None = None
    if args.records_only:
        try:
            print(f"… {args.records} record events, {args.record_subscribers} subscriber(s)",
                  file=sys.stderr)
            records = measure_records(args, ctx)
        finally:
            cleanup_redis()
            if not args.keep_data:
                shutil.rmtree(data, ignore_errors=True)
        print(json.dumps({"bench": "stream-records", "load": [load0, loadavg()],
                          "records": records}))
        return
    try:
        plan = [("P4", n, args.rate, args.seconds, args.rate2) for n in sizes]
        if args.p5:
            plan.append(("P5", args.p5, args.p5_rate, args.p5_seconds, 0))
        for run, n, rate, seconds, rate2 in plan:
            for kind in kinds:
                print(f"… {kind} with {n} subscribers (load {loadavg():.2f})", file=sys.stderr)
                rows.append({"run": run, "load": loadavg(),
                             **measure_size(kind, n, args, ctx, rate=rate, seconds=seconds,
                                            rate2=rate2)})
                print(f"  {json.dumps(rows[-1])}", file=sys.stderr)
        print("… replay (P7)", file=sys.stderr)
        replay = measure_replay(args, ctx)
        print("… raw Redis baseline", file=sys.stderr)
        redis_base = measure_redis(args, ctx)
        if args.records:
            print(f"… {args.records} record events followed live", file=sys.stderr)
            records = measure_records(args, ctx)
    finally:
        cleanup_redis()
        if not args.keep_data:
            shutil.rmtree(data, ignore_errors=True)
    load1 = loadavg()

    def row(run: str, kind: str, n: int) -> dict[str, Any]:
        return next((r for r in rows if (r["run"], r["kind"], r["subscribers"]) == (run, kind, n)),
                    {})

    def f(v: Any, fmt: str = "{:.2f}") -> str:
        return "–" if v is None else fmt.format(v)

    print(f"stream relay (P4–P7); load average {load0:.2f} → {load1:.2f}; nofile {nofile}")
    print("steady: p50/p99/max over every delivery; first/last: median over events of the"
          " first and last delivery; µs/ev: server CPU per delivered event (steady, burst);"
          " cli µs/ev: client processes' CPU")
    print(f"{'subs':>6} {'server':<7}{'conns':>6}{'rate':>5}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'max ms':>9}{'first':>8}{'last':>8}{'deliv.':>8}{'µs/ev':>7}{'cli µs':>7}"
          f"{'burst':>7}{'deliv.':>8}{'µs/ev':>7}{'KiB/conn':>9}{'load':>6}")
    for r in rows:
        print(f"{r['subscribers']:>6} {r['kind']:<7}{r['connected']:>6}{r['rate']:>5g}"
              f"{f(r['p50_ms']):>9}{f(r['p99_ms']):>9}{f(r['max_ms']):>9}"
              f"{f(r['first_p50_ms']):>8}{f(r['last_p50_ms']):>8}"
              f"{r['delivered'] / max(r['expected'], 1):>8.1%}"
              f"{f(r['steady_cpu_us_per_event'], '{:.1f}'):>7}"
              f"{f(r['clients_cpu_us_per_event'], '{:.1f}'):>7}{r['burst_events']:>7}"
              f"{r['burst_delivered'] / max(r['burst_expected'], 1):>8.1%}"
              f"{f(r['burst_cpu_us_per_event'], '{:.1f}'):>7}"
              f"{f(r['rss_per_conn_kib'], '{:.1f}'):>9}{r['load']:>6.1f}")
    slow = [r for r in rows if r.get("slow")]
    if slow:
        print(f"{'subs':>6} {'server':<7}{'rate':>5}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
              f"{'first':>8}{'last':>8}{'deliv.':>8}{'µs/ev':>7}")
        for r in slow:
            q = r["slow"]
            print(f"{r['subscribers']:>6} {r['kind']:<7}{q['rate']:>5g}{f(q['p50_ms']):>9}"
                  f"{f(q['p99_ms']):>9}{f(q['max_ms']):>9}{f(q['first_p50_ms']):>8}"
                  f"{f(q['last_p50_ms']):>8}{q['delivered'] / max(q['expected'], 1):>8.1%}"
                  f"{f(q['steady_cpu_us_per_event'], '{:.1f}'):>7}")
    print(f"raw Redis XADD → XREAD BLOCK: p50 {redis_base['p50_ms']:.3f} ms, "
          f"p99 {redis_base['p99_ms']:.3f} ms ({redis_base['received']}/{redis_base['events']})")
    print(f"P7 replay of {replay['events']}: subscribe → last {replay['subscribe_to_last_ms_p50']}"
          f" ms p50 (max {replay['subscribe_to_last_ms_max']}), connect → last "
          f"{replay['connect_to_last_ms_p50']} ms; raw XRANGE {replay['baseline_xrange_ms_p50']}"
          f" ms; exact: {replay['exact']}")
    verdict: dict[str, Any] = {}
    for n, target in TARGET_P99.items():
        r = row("P4", "stream", n)
        if r:
            verdict[f"P4_{n}"] = r["p99_ms"] <= target and r["delivered"] == r["expected"]
    if args.p5 and row("P5", "stream", args.p5):
        r = row("P5", "stream", args.p5)
        verdict[f"P5_{args.p5}"] = r["connected"] >= args.p5 and r["rss_per_conn_kib"] <= 20
    bursts = [r["burst_cpu_us_per_event"] for r in rows if r["kind"] == "stream"
              and r["burst_cpu_us_per_event"] is not None]
    if bursts:
        verdict["P6_burst"] = max(bursts) <= 10
    verdict["P7"] = replay["subscribe_to_last_ms_p50"] <= 50 and replay["exact"]
    print("targets: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in verdict.items()))
    if records:
        print(f"record events: {records['records']} to {records['subscribers']} subscriber(s) in "
              f"{records['append_to_last_received_s']} s (appended in {records['append_s']} s), "
              f"server {records['server_cpu_us_per_delivered_event']} µs CPU per delivery, "
              f"{records['frames_per_subscriber']} frames each, closed {records['closed']}, "
              f"exact: {records['exact']}; Redis {records['redis_memory_usage_bytes']} bytes in "
              f"{records['stream_entries']} entries")
    print(json.dumps({"bench": "stream", "load": [load0, load1], "rows": rows,
                      "redis_baseline": redis_base, "replay": replay, "records": records,
                      "targets": verdict}))


if __name__ == "__main__":
    main()
