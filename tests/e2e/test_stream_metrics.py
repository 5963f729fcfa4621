"""The stream server's ``/metrics`` move as the relay works, scraped from a real ``python -m
stream`` process of this module's own: ``coalesced`` counts progress events replaced for a
subscriber too slow to keep up, and the reader lag rises while the reader is held up and
falls again once it is reading live."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from bulkjobs.connections import get_synclog
from bulkjobs.synclog import job_event
from bulkjobs.tokens import issue
from models.seed import SeedResult
from tests.e2e.conftest import Proc, free_port, wait_for
from tests.e2e.helpers import Subscriber

pytestmark = pytest.mark.e2e

PAD = "x" * 4000  # big events fill the slow subscriber's socket buffers quickly


@pytest.fixture
def stream() -> Iterator[tuple[Proc, int]]:
    """A stream server process on a free port (so pausing it disturbs no other test)."""
    port = free_port()
    proc = Proc("stream-metrics", [sys.executable, "-m", "stream"],
                {**os.environ, "STREAM_PORT": str(port)}).start()
    try:
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200,
                 "stream")
        yield proc, port
    finally:
        proc.stop()


def scrape(port: int) -> dict[str, float]:
    body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {name: float(value) for name, value in (
        line.rsplit(" ", 1) for line in body.splitlines() if line and not line.startswith("#"))}


def append(project: str, token: str, *, status: str = "processing",
           info: dict[str, Any] | None = None) -> int:
    now = time.time()
    event = job_event(token=token, project=project, job="bulk_delete_records", status=status,
                      info=info or {"total": 10, "remaining": 5}, created_on=now,
                      updated_on=now)
    return get_synclog().append("cc", [event])[0]


def ops_jwt(seeded: SeedResult) -> str:
    ops = next(u for u in seeded.users if u.ops)
    return issue(ops.gid, ops=True)


def slow_socket(port: int) -> socket.socket:
    """A client socket with a tiny receive buffer, so the server's side congests quickly."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


def test_coalesced_counts_progress_replaced_for_a_slow_subscriber(stream, seeded):
    """A subscriber that stops reading: progress events of one job pile up and are coalesced
    (``bulkjobs_stream_coalesced_total`` goes up); it still gets the job's terminal event."""
    _, port = stream
    project = seeded.projects[0].gid
    token = str(uuid.uuid4())
    before = scrape(port)

    async def scenario() -> tuple[int, list[dict[str, Any]], int]:
        ws = await connect(f"ws://127.0.0.1:{port}/sync", sock=slow_socket(port), max_queue=1,
                           compression=None, max_size=None)
        await ws.send(json.dumps({"op": "auth", "jwt": ops_jwt(seeded)}))
        json.loads(await ws.recv())
        await ws.send(json.dumps({"op": "subscribe", "project": project}))
        assert json.loads(await ws.recv())["op"] == "subscribed"
        appended = 0
        async with asyncio.timeout(60):
            while True:
                append(project, token, info={"total": 10**6, "remaining": 10**6 - appended,
                                             "pad": PAD})
                appended += 1
                if appended % 20 == 0:
                    metrics = await asyncio.to_thread(scrape, port)
                    if metrics["bulkjobs_stream_coalesced_total"] > \
                            before["bulkjobs_stream_coalesced_total"]:
                        break
        final = append(project, token, status="done", info={"total": 10**6, "remaining": 0})
        got: list[dict[str, Any]] = []
        async with asyncio.timeout(60):
            while not got or got[-1]["cursor"] != final:
                msg = json.loads(await ws.recv())
                if msg.get("op") == "sync":
                    got += msg["sync"]
        await ws.close()
        return appended, got, final

    appended, got, final = asyncio.run(scenario())
    mine = [e for e in got if e["data_key"] == token]
    assert len(mine) < appended + 1, "nothing was coalesced for this subscriber"
    assert mine[-1]["cursor"] == final and mine[-1]["data"]["status"] == "done"
    remaining = [e["data"]["info"]["remaining"] for e in mine]
    assert remaining == sorted(remaining, reverse=True)
    after = scrape(port)
    assert after["bulkjobs_stream_coalesced_total"] > before["bulkjobs_stream_coalesced_total"]
    assert after["bulkjobs_stream_slow_closed_total"] == before["bulkjobs_stream_slow_closed_total"]


def test_reader_lag_rises_while_the_reader_is_held_up_and_falls_when_it_reads_live(
    stream, seeded
):
    """The process paused (SIGSTOP) for a second after an append: once resumed it reads that
    event a second late and ``bulkjobs_stream_reader_lag_seconds`` says so; the next event,
    read live, brings the lag down again."""
    proc, port = stream
    project = seeded.projects[0].gid
    url = f"ws://127.0.0.1:{port}/sync"
    assert proc.popen is not None

    async def receive(sub: Subscriber, cursor: int) -> None:
        await sub.until(lambda events: any(e["cursor"] == cursor for e in events), timeout=30)

    async def scenario() -> tuple[float, float]:
        async with Subscriber(url, ops_jwt(seeded)) as sub:
            await sub.subscribe(project)
            os.killpg(proc.popen.pid, signal.SIGSTOP)
            try:
                held = append(project, str(uuid.uuid4()))
                await asyncio.sleep(1.0)
            finally:
                os.killpg(proc.popen.pid, signal.SIGCONT)
            await receive(sub, held)
            stalled = (await asyncio.to_thread(scrape, port))["bulkjobs_stream_reader_lag_seconds"]
            live = append(project, str(uuid.uuid4()))
            await receive(sub, live)
            after = (await asyncio.to_thread(scrape, port))["bulkjobs_stream_reader_lag_seconds"]
            return stalled, after

    stalled, after = asyncio.run(scenario())
    assert stalled >= 0.95, stalled  # read at least the paused second after its append
    assert 0 <= after < stalled
