"""The stream bench's child processes, each started as ``bench/stream.py --role ROLE``:

* **client** — asyncio + the ``websockets`` client holding ``--conns`` subscribers; it
  counts every sync event as its frame is parsed and reports over stdout when asked;
* **appender** — ``SyncLog.append`` of one job's progress events (send time in
  ``info["t"]``) at ``--rate``/s, ``--batch`` per append;
* **raw-server** — the raw websockets baseline: XREAD of the same Redis stream and one
  ``websockets.broadcast`` per read batch.

And the /proc helpers (CPU, RSS, load) the orchestrator shares.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, cast

TOKEN = "bench-progress-job"


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


