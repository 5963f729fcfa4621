"""The stream bench's measurements: P4–P6 per subscriber count (:func:`measure_size`), P7
replay (:func:`measure_replay`), a job's record events followed live
(:func:`measure_records`) and the raw Redis XADD → XREAD baseline (:func:`measure_redis`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import (
    BIN,
    free_port,
    median,
    percentile,
    process,
    profiled,
)
from bench.stream_clients import SCRIPT, WAIT, append, clients, wait_delivered
from bench.stream_roles import TOKEN, cpu_seconds, loadavg, rss_kib


def measure_size(kind: str, n: int, args: argparse.Namespace, ctx: dict[str, Any],
                 *, rate: float, seconds: float, rate2: float = 0) -> dict[str, Any]:
    """One server (``kind``: stream or raw), ``n`` subscribers: RSS, steady latency, burst."""
    port = free_port()
    data: Path = ctx["data"]
    if kind == "stream":
        cmd = [str(BIN / "python"), "-m", "stream"]
        env = {"STREAM_PORT": str(port), "LOG_LEVEL": "WARNING"}

        def ready() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                return bool(r.status == 200)
    else:
        cmd = [str(BIN / "python"), SCRIPT, "--role", "raw-server", "--port", str(port)]
        env = {}

        def ready() -> bool:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True

    out: dict[str, Any] = {"kind": kind, "subscribers": n}
    with process(cmd, ready=ready, log=data / f"server-{kind}-{n}.log", env=env) as srv:
        with clients(kind, port, 10, args, ctx):  # warm-up: threads, pools, imports
            pass
        time.sleep(0.5)
        rss0 = rss_kib(srv.pid)
        t_conn = time.perf_counter()
        with clients(kind, port, n, args, ctx) as (cl, ok, failed):
            out["connect_s"] = round(time.perf_counter() - t_conn, 2)
            time.sleep(1.0)
            rss1 = rss_kib(srv.pid)
            out.update(connected=ok, failed=failed, rss_before_kib=rss0, rss_after_kib=rss1,
                       rss_per_conn_kib=round((rss1 - rss0) / max(ok, 1), 2))
            # what the open connections cost with no events (keepalive pings, refreshes)
            cpu0, t0 = cpu_seconds(srv.pid), time.perf_counter()
            time.sleep(args.idle)
            out["idle_cpu_pct"] = round(
                (cpu_seconds(srv.pid) - cpu0) * 100 / (time.perf_counter() - t0), 1
            )

            # warm-up events (not measured)
            ph = f"{kind}-{n}-warm"
            append(ctx, None, phase=ph, count=5, rate=rate, lat=False)
            wait_delivered(cl, ph, 5 * ok, ok, 30)

            def steady(rate: float, tag: str) -> dict[str, Any]:
                """P4: one job's progress at ``rate``/s for ``seconds``."""
                ph = f"{kind}-{n}-{tag}"
                count = max(1, round(rate * seconds))
                with profiled(args.py_spy, srv.pid, ph):
                    ccpu0 = sum(cpu_seconds(p.pid) for p in cl.procs)
                    rep, cpu0 = append(ctx, srv.pid, phase=ph, count=count, rate=rate)
                    got = wait_delivered(cl, ph, count * ok, ok, 30)
                    cpu = cpu_seconds(srv.pid) - cpu0
                    ccpu = sum(cpu_seconds(p.pid) for p in cl.procs) - ccpu0
                stats = cl.ask({"cmd": "stats", "ph": ph}, timeout=WAIT)
                lat_ms = [x * 1000 for s in stats for _, x in s["lat"]]
                # per event: its first and its last delivery (pick-up vs. the whole fan-out)
                first: dict[int, float] = {}
                last: dict[int, float] = {}
                for s in stats:
                    for seq, x in s["lat"]:
                        first[seq] = min(first.get(seq, x), x)
                        last[seq] = max(last.get(seq, x), x)
                return dict(
                    rate=rate, events=count,
                    appended_per_s=round(rep["appended"] / rep["seconds"], 1),
                    expected=count * ok, delivered=got,
                    p50_ms=round(median(lat_ms), 3), p99_ms=round(percentile(lat_ms, 99), 3),
                    max_ms=round(max(lat_ms), 3) if lat_ms else None,
                    first_p50_ms=round(median(list(first.values())) * 1000, 3),
                    last_p50_ms=round(median(list(last.values())) * 1000, 3),
                    steady_cpu_s=round(cpu, 3), clients_cpu_s=round(ccpu, 3),
                    clients_cpu_us_per_event=round(ccpu * 1e6 / got, 2) if got else None,
                    steady_cpu_us_per_event=round(cpu * 1e6 / got, 2) if got else None,
                    order_errors=sum(s["order"] for s in stats),
                    open_after=sum(s["open"] for s in stats),
                )

            out.update(steady(rate, "steady"))
            if rate2:
                out["slow"] = steady(rate2, "slow")

            # P6: a burst, appended as fast as one appender can
            ph = f"{kind}-{n}-burst"
            bcount = min(args.burst, max(args.burst_min, round(args.burst_deliveries / n)))
            with profiled(args.py_spy, srv.pid, ph):
                rep, cpu0 = append(ctx, srv.pid, phase=ph, count=bcount, rate=0,
                                   batch=args.burst_batch, tokens=100, lat=False)
                got = wait_delivered(cl, ph, bcount * ok, ok, WAIT)
                cpu = cpu_seconds(srv.pid) - cpu0
                burst_s = time.perf_counter() - rep["go"]
            out.update(
                burst_events=bcount, burst_appended_per_s=round(rep["appended"] / rep["seconds"]),
                burst_expected=bcount * ok, burst_delivered=got, burst_cpu_s=round(cpu, 3),
                burst_wall_s=round(burst_s, 2),
                burst_cpu_us_per_event=round(cpu * 1e6 / got, 2) if got else None,
            )
            out["rss_end_kib"] = rss_kib(srv.pid)
    return out


def measure_replay(args: argparse.Namespace, ctx: dict[str, Any]) -> dict[str, Any]:
    """P7 against a fresh stream server with no other subscribers."""
    from websockets.asyncio.client import connect

    from bulkjobs import keys
    from bulkjobs.connections import get_redis
    from bulkjobs.synclog import SyncLog, job_event

    log = SyncLog(get_redis())
    port = free_port()
    url = f"ws://127.0.0.1:{port}/sync"

    def ready() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return bool(r.status == 200)

    def missed(k: int) -> int:
        """Append ``k`` events nobody is listening to; returns the cursor before them."""
        before = log.cursor("cc")
        now = time.time()
        for i in range(0, k, 100):
            log.append("cc", [
                job_event(token=TOKEN, project=ctx["project"], job="bulk_delete_records",
                          status="processing", info={"ph": "replay", "seq": j, "t": now},
                          created_on=now, updated_on=now)
                for j in range(i, min(i + 100, k))
            ])
        return before

    async def once(k: int) -> tuple[float, float, bool]:
        cursor = missed(k)
        t0 = time.perf_counter()
        async with connect(url, compression=None, max_size=None, open_timeout=30) as ws:
            await ws.send(json.dumps({"op": "auth", "jwt": ctx["jwt"]}))
            json.loads(await asyncio.wait_for(ws.recv(), 30))
            t1 = time.perf_counter()
            await ws.send(json.dumps(
                {"op": "subscribe", "project": ctx["project"], "cc_cursor": cursor}
            ))
            got: list[int] = []
            async with asyncio.timeout(30):
                while len(got) < k:
                    msg = json.loads(await ws.recv())
                    if msg["op"] == "sync":
                        got += [ev["cursor"] for ev in msg["sync"]]
                    elif msg["op"] == "subscribed":
                        assert msg["recovered"] is True, msg
            t2 = time.perf_counter()
        ok = got == list(range(cursor + 1, cursor + k + 1))
        return (t2 - t1) * 1000, (t2 - t0) * 1000, ok

    k = args.replay_events
    sub_ms: list[float] = []
    conn_ms: list[float] = []
    exact = True
    cmd = [str(BIN / "python"), "-m", "stream"]
    env = {"STREAM_PORT": str(port), "LOG_LEVEL": "WARNING"}
    with process(cmd, ready=ready, log=ctx["data"] / "server-replay.log", env=env):
        asyncio.run(once(10))  # warm-up
        for _ in range(args.replays):
            a, b, ok = asyncio.run(once(k))
            sub_ms.append(a)
            conn_ms.append(b)
            exact &= ok
    # baseline: one XRANGE of the same k entries
    r = get_redis()
    stream = keys.sync_stream(keys.CC_SPACE)
    last = log.cursor("cc")
    xr: list[float] = []
    for _ in range(args.replays):
        t0 = time.perf_counter()
        got: Any = r.xrange(stream, f"({last - k}-0", f"{last}-0", count=k)
        xr.append((time.perf_counter() - t0) * 1000)
        assert len(got) == k
    return {
        "events": k, "runs": args.replays, "exact": exact,
        "subscribe_to_last_ms_p50": round(median(sub_ms), 2),
        "subscribe_to_last_ms_max": round(max(sub_ms), 2),
        "connect_to_last_ms_p50": round(median(conn_ms), 2),
        "connect_to_last_ms_max": round(max(conn_ms), 2),
        "baseline_xrange_ms_p50": round(median(xr), 2),
    }


def measure_records(args: argparse.Namespace, ctx: dict[str, Any]) -> dict[str, Any]:
    """A job's record events followed live: ``--records`` events appended as a worker appends
    them (``SyncLog.append_records``, 100,000 per call, packed), with ``--record-subscribers``
    project subscribers on a fresh stream server.  The first subscriber parses every frame and
    checks each cursor and gid; the others count events in the frame text.  Also the sync
    log's Redis memory for those events (``MEMORY USAGE`` of the stream)."""
    import uuid

    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    from bulkjobs import keys
    from bulkjobs.connections import get_redis
    from bulkjobs.synclog import SyncLog

    r = get_redis()
    log = SyncLog(r)
    project = ctx["project"]
    n = args.records
    gids = [str(uuid.uuid4()) for _ in range(n)]
    port = free_port()
    url = f"ws://127.0.0.1:{port}/sync"

    def ready() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            return bool(resp.status == 200)

    def append_all() -> float:
        t0 = time.perf_counter()
        for i in range(0, n, 100_000):
            log.append_records(project, [("records", "DELETE", gids[i:i + 100_000])])
        return time.perf_counter() - t0

    async def follow(ws: Any, first: int, exact: bool) -> dict[str, Any]:
        got, ok, frames = 0, True, 0
        try:
            async with asyncio.timeout(WAIT):
                while got < n:
                    text = await ws.recv()
                    frames += 1
                    if exact:
                        for ev in json.loads(text)["sync"]:
                            ok &= (ev["cursor"] == first + got and ev["data_key"] == gids[got])
                            got += 1
                    else:
                        got += text.count('"cursor":')
        except (ConnectionClosed, TimeoutError) as exc:
            return {"got": got, "closed": repr(exc), "frames": frames}
        return {"got": got, "ok": ok, "frames": frames, "t": time.perf_counter()}

    async def run(pid: int) -> dict[str, Any]:
        conns = []
        for _ in range(args.record_subscribers):
            ws = await connect(url, compression=None, max_size=None, open_timeout=30)
            await ws.send(json.dumps({"op": "auth", "jwt": ctx["jwt"]}))
            await ws.recv()
            await ws.send(json.dumps({"op": "subscribe", "project": project}))
            while json.loads(await ws.recv())["op"] != "subscribed":
                pass
            conns.append(ws)
        first = log.cursor(project) + 1
        cpu0 = cpu_seconds(pid)
        t0 = time.perf_counter()
        followers = [asyncio.create_task(follow(ws, first, i == 0)) for i, ws in enumerate(conns)]
        append_s = await asyncio.to_thread(append_all)
        results = await asyncio.gather(*followers)
        cpu = cpu_seconds(pid) - cpu0
        for ws in conns:
            await ws.close()
        done = [x for x in results if "t" in x]
        last = max((x["t"] for x in done), default=t0)
        return {
            "records": n, "subscribers": len(conns), "append_s": round(append_s, 3),
            "append_events_per_s": round(n / append_s), "received_all": len(done),
            "closed": [x["closed"] for x in results if "closed" in x],
            "exact": bool(done) and bool(results[0].get("ok")),
            "frames_per_subscriber": results[0]["frames"],
            "append_to_last_received_s": round(last - t0, 3),
            "server_cpu_s": round(cpu, 2),
            "server_cpu_us_per_delivered_event": round(cpu * 1e6 / max(1, n * len(done)), 3),
            "stream_entries": int(r.xlen(keys.sync_stream(project))),
            "redis_memory_usage_bytes": int(r.memory_usage(keys.sync_stream(project), samples=0)
                                            or 0),
            "load": loadavg(),
        }

    cmd = [str(BIN / "python"), "-m", "stream"]
    env = {"STREAM_PORT": str(port), "LOG_LEVEL": "WARNING"}
    with process(cmd, ready=ready, log=ctx["data"] / "server-records.log", env=env) as proc:
        return asyncio.run(run(proc.pid))


def measure_redis(args: argparse.Namespace, ctx: dict[str, Any]) -> dict[str, Any]:
    """Baseline (b): the same appender, one XREAD BLOCK reader (a thread of this process)."""
    from bulkjobs import keys
    from bulkjobs.connections import get_redis
    from bulkjobs.synclog import SyncLog

    stream = keys.sync_stream(keys.CC_SPACE)
    start = f"{SyncLog(get_redis()).cursor('cc')}-0"
    ph = "redis-steady"
    lat: list[float] = []
    stop = threading.Event()
    count = max(1, round(args.rate * args.seconds))

    def reader() -> None:
        import redis

        from bulkjobs.settings import get_settings

        r = redis.Redis.from_url(get_settings().redis_url)
        last: Any = start
        deadline = time.monotonic() + args.seconds + WAIT
        while not stop.is_set() and time.monotonic() < deadline and len(lat) < count:
            got: Any = r.xread({stream: last}, block=200, count=1000)
            now = time.time()
            for _, entries in got or []:
                for eid, f in entries:
                    last = eid
                    info = json.loads(f[b"d"])["data"]["info"]
                    if info.get("ph") == ph:
                        lat.append((now - info["t"]) * 1000)
        r.close()

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    time.sleep(0.3)
    append(ctx, None, phase=ph, count=count, rate=args.rate)
    th.join(WAIT)
    stop.set()
    return {"events": count, "received": len(lat), "p50_ms": round(median(lat), 3),
            "p99_ms": round(percentile(lat, 99), 3), "max_ms": round(max(lat), 3)}
