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
import asyncio
import json
import math
import os
import queue
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (  # noqa: E402
    BIN,
    ROOT,
    cleanup_redis,
    free_port,
    isolate,
    median,
    percentile,
    process,
    profiled,
)

SCRIPT = str(Path(__file__).resolve())
TOKEN = "bench-progress-job"
#: Longest any single wait of the orchestrator may take.
WAIT = 120.0


# -- helpers shared by the roles ------------------------------------------------------------


def raise_nofile(want: int = 65536) -> int:
    """Raise this process's open-file limit (children inherit it); returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for target in (max(want, hard), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, target))
            return target
        except (ValueError, OSError):
            continue
    return soft


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def emit(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def new_loop() -> asyncio.AbstractEventLoop:
    """Clients use uvloop when it is there (cheaper receiving = truer latencies)."""
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


# -- role: client process -------------------------------------------------------------------


def client_role(args: argparse.Namespace) -> None:
    loop = new_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(_client(args))


async def _client(args: argparse.Namespace) -> None:
    from websockets.asyncio.client import ClientConnection, connect
    from websockets.frames import Frame, Opcode
    from websockets.protocol import State

    class Counting(ClientConnection):
        """Hands sync frames to ``sink`` as they are parsed, skipping recv()'s queue."""

        sink: Any = None

        def process_event(self, event: Any) -> None:
            sink = self.sink
            if sink is not None and type(event) is Frame and event.opcode is Opcode.TEXT:
                sink(event.data)
            else:
                super().process_event(event)

    counts: dict[str, int] = {}
    finals: dict[str, int] = {}  # connections that got the phase's last event
    lat: dict[str, list[tuple[int, float]]] = {}
    bad = {"order": 0, "other": 0}

    def make_sink() -> Any:
        last = [0]

        def sink(data: bytes) -> None:
            now = time.time()
            msg = json.loads(data)
            if msg.get("op") != "sync":
                bad["other"] += 1
                return
            for ev in msg["sync"]:
                if ev["cursor"] <= last[0]:
                    bad["order"] += 1
                last[0] = ev["cursor"]
                info = ev["data"]["info"]
                ph = info.get("ph", "")
                counts[ph] = counts.get(ph, 0) + 1
                if info.get("seq") == info.get("total", 0) - 1:
                    finals[ph] = finals.get(ph, 0) + 1
                if info.get("lat"):
                    lat.setdefault(ph, []).append((info["seq"], now - info["t"]))

        return sink

    conns: list[Any] = []
    errors: list[str] = []
    gate = asyncio.Semaphore(args.concurrency)

    async def open_one() -> None:
        async with gate:
            for attempt in range(3):
                try:
                    ws = await connect(
                        args.url, create_connection=Counting, compression=None, max_size=None,
                        ping_interval=None, open_timeout=60, close_timeout=5,
                    )
                    if args.kind == "stream":
                        await ws.send(json.dumps({"op": "auth", "jwt": args.jwt}))
                        reply = json.loads(await asyncio.wait_for(ws.recv(), 60))
                        assert reply.get("ok") is True, reply
                        await ws.send(json.dumps({"op": "subscribe", "project": args.project}))
                        reply = json.loads(await asyncio.wait_for(ws.recv(), 60))
                        assert reply.get("op") == "subscribed", reply
                    cast(Any, ws).sink = make_sink()
                    conns.append(ws)
                    return
                except Exception as exc:  # noqa: BLE001 - reported, retried a bounded number
                    if attempt == 2:
                        errors.append(repr(exc)[:200])
                    await asyncio.sleep(0.5)

    await asyncio.gather(*(open_one() for _ in range(args.conns)))
    emit({"ready": len(conns), "failed": args.conns - len(conns), "errors": errors[:3]})

    lines: asyncio.Queue[str] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    def read_stdin() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, '{"cmd": "quit"}')

    threading.Thread(target=read_stdin, daemon=True).start()
    deadline = time.monotonic() + args.lifetime
    while time.monotonic() < deadline:
        try:
            line = await asyncio.wait_for(lines.get(), 5)
        except TimeoutError:
            continue
        cmd = json.loads(line)
        if cmd["cmd"] == "count":
            emit({"count": counts.get(cmd["ph"], 0), "final": finals.get(cmd["ph"], 0)})
        elif cmd["cmd"] == "stats":
            ph = cmd["ph"]
            open_now = sum(ws.protocol.state is State.OPEN for ws in conns)
            emit({"count": counts.get(ph, 0),
                  "lat": [(seq, round(x, 6)) for seq, x in lat.get(ph, [])],
                  "open": open_now, **bad})
            lat.pop(ph, None)
        else:
            break
    gate = asyncio.Semaphore(200)

    async def close_one(ws: Any) -> None:
        async with gate:
            try:
                await asyncio.wait_for(ws.close(), 5)
            except Exception:  # noqa: BLE001 - going away anyway
                pass

    await asyncio.gather(*(close_one(ws) for ws in conns))
    emit({"closed": len(conns)})


# -- role: appender -------------------------------------------------------------------------


def appender_role(args: argparse.Namespace) -> None:
    from bulkjobs.connections import get_redis
    from bulkjobs.synclog import SyncLog, job_event

    log = SyncLog(get_redis())
    log.cursors("cc")  # scripts loaded, connection open
    emit({"ready": True})
    sys.stdin.readline()  # "go"
    created = time.time()
    interval = 1 / args.rate if args.rate > 0 else 0.0
    start = time.perf_counter()
    cursors: list[int] = []
    sent = 0
    while sent < args.count:
        if interval:
            delay = start + sent * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        n = min(args.batch, args.count - sent)
        batch = []
        for i in range(sent, sent + n):
            t = time.time()
            info = {"ph": args.phase, "seq": i, "total": args.count,
                    "remaining": args.count - i - 1, "t": t}
            if args.lat:
                info["lat"] = 1
            batch.append(job_event(
                token=f"{TOKEN}-{i % args.tokens}", project=args.project,
                job="bulk_delete_records", status="processing", info=info,
                created_on=created, updated_on=t,
            ))
        cursors += log.append("cc", batch)
        sent += n
    emit({"appended": sent, "seconds": time.perf_counter() - start,
          "first": cursors[0] if cursors else None, "last": cursors[-1] if cursors else None})


# -- role: raw websockets broadcast server (baseline) ---------------------------------------


def raw_server_role(args: argparse.Namespace) -> None:
    # On the stream's own event loop (uvloop when installed), so the baseline differs from
    # it by the relay's work only.
    from stream.__main__ import run

    run(_raw_server(args))


async def _raw_server(args: argparse.Namespace) -> None:
    import redis.asyncio
    from websockets.asyncio.server import broadcast, serve

    from bulkjobs import keys
    from bulkjobs.settings import get_settings

    conns: set[Any] = set()

    async def handler(ws: Any) -> None:
        conns.add(ws)
        try:
            await ws.wait_closed()
        finally:
            conns.discard(ws)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    client = redis.asyncio.Redis.from_url(get_settings().redis_url)
    stream = keys.sync_stream(keys.CC_SPACE)
    newest: Any = await client.xrevrange(stream, count=1)
    last: Any = newest[0][0] if newest else b"0-0"
    deadline = time.monotonic() + args.lifetime
    async with serve(handler, "127.0.0.1", args.port, compression=None, max_size=64 * 1024,
                     ping_interval=20, ping_timeout=20):
        while not stop.is_set() and time.monotonic() < deadline:
            got: Any = await client.xread({stream: last}, count=1000, block=500)
            for _, entries in got or []:
                last = entries[-1][0]
                texts = [
                    '{"type":"cc","cursor":' + eid.decode().split("-", 1)[0] + ","
                    + f[b"d"].decode()[1:]
                    for eid, f in entries
                ]
                broadcast(conns, '{"op":"sync","sync":[' + ",".join(texts) + "]}")
    await client.aclose()


# -- the orchestrator -----------------------------------------------------------------------


class Clients:
    """Client processes holding ``n`` subscribers between them; spoken to over pipes."""

    def __init__(self, kind: str, url: str, n: int, procs: int, *, jwt: str, project: str,
                 logdir: Path, lifetime: float) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self.replies: list[queue.Queue[dict[str, Any]]] = []
        shares = [n // procs + (i < n % procs) for i in range(procs)]
        for i, share in enumerate(shares):
            cmd = [str(BIN / "python"), SCRIPT, "--role", "client", "--kind", kind,
                   "--url", url, "--conns", str(share), "--jwt", jwt, "--project", project,
                   "--lifetime", str(lifetime)]
            log = (logdir / f"client-{kind}-{n}-{i}.log").open("w")
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=log, text=True, cwd=ROOT, start_new_session=True)
            q: queue.Queue[dict[str, Any]] = queue.Queue()
            threading.Thread(target=self._pump, args=(proc, q), daemon=True).start()
            self.procs.append(proc)
            self.replies.append(q)

    @staticmethod
    def _pump(proc: subprocess.Popen[str], q: queue.Queue[dict[str, Any]]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            q.put(json.loads(line))

    def _get(self, i: int, timeout: float) -> dict[str, Any]:
        try:
            return self.replies[i].get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"client process {self.procs[i].pid} did not answer") from None

    def ready(self, timeout: float) -> tuple[int, int, list[str]]:
        ok = failed = 0
        errors: list[str] = []
        for i in range(len(self.procs)):
            reply = self._get(i, timeout)
            ok += reply["ready"]
            failed += reply["failed"]
            errors += reply["errors"]
        return ok, failed, errors

    def ask(self, cmd: dict[str, Any], timeout: float = 60) -> list[dict[str, Any]]:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(cmd) + "\n")
            proc.stdin.flush()
        return [self._get(i, timeout) for i in range(len(self.procs))]

    def count(self, ph: str) -> tuple[int, int]:
        """Events of phase ``ph`` received, and connections that got its last event."""
        replies = self.ask({"cmd": "count", "ph": ph})
        return sum(r["count"] for r in replies), sum(r["final"] for r in replies)

    def close(self) -> None:
        for proc in self.procs:
            try:
                assert proc.stdin is not None
                proc.stdin.write('{"cmd": "quit"}\n')
                proc.stdin.flush()
            except (BrokenPipeError, OSError):
                pass
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@contextmanager
def clients(kind: str, port: int, n: int, args: argparse.Namespace, ctx: dict[str, Any]
            ) -> Iterator[tuple[Clients, int, int]]:
    procs = max(1, min(args.clients, math.ceil(n / 50)))
    cl = Clients(kind, f"ws://127.0.0.1:{port}/sync", n, procs, jwt=ctx["jwt"],
                 project=ctx["project"], logdir=ctx["data"], lifetime=3600)
    try:
        ok, failed, errors = cl.ready(timeout=max(WAIT, n / 20))
        if errors:
            print(f"  ! {failed} of {n} {kind} connections failed: {errors}", file=sys.stderr)
        yield cl, ok, failed
    finally:
        cl.close()


def append(ctx: dict[str, Any], server_pid: int | None, *, phase: str, count: int, rate: float,
           batch: int = 1, tokens: int = 1, lat: bool = True) -> tuple[dict[str, Any], float]:
    """Run the appender process; returns its report (plus ``go``, the ``perf_counter`` when it
    started appending) and the server CPU time then."""
    cmd = [str(BIN / "python"), SCRIPT, "--role", "appender", "--phase", phase,
           "--count", str(count), "--rate", str(rate), "--batch", str(batch),
           "--tokens", str(tokens), "--project", ctx["project"]] + (["--lat"] if lat else [])
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=ROOT, start_new_session=True)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        json.loads(proc.stdout.readline())  # ready
        cpu0 = cpu_seconds(server_pid) if server_pid else 0.0
        go = time.perf_counter()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        limit = (count / rate if rate > 0 else 0) + WAIT
        out, _ = proc.communicate(timeout=limit)
        return {**json.loads(out.strip().splitlines()[-1]), "go": go}, cpu0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_delivered(cl: Clients, ph: str, expected: int, conns: int, timeout: float) -> int:
    """Poll the clients until every connection got the phase's last event (events arrive in
    order, so nothing more is coming; progress events may have been coalesced on the way),
    or nothing more came for a while.  Returns the events received."""
    deadline = time.monotonic() + timeout
    got, last_change, last_got = 0, time.monotonic(), -1
    while time.monotonic() < deadline:
        got, final = cl.count(ph)
        if got >= expected or final >= conns:
            return got
        if got != last_got:
            last_got, last_change = got, time.monotonic()
        elif time.monotonic() - last_change > 30:
            break
        time.sleep(0.02)
    return got


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
