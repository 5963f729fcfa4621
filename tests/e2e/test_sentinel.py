"""Redis through Sentinel, with real processes: a web, a worker and a stream server (the
Procfile's commands) given ``REDIS_SENTINELS`` and a ``REDIS_URL`` that points at nothing
find the primary through three sentinels of a private deployment (:mod:`tests.sentinel`) —
for the sync log, the rate limiter, the heartbeats and the Celery broker.  Once the primary
is SIGKILLed and a replica promoted, they find the new one by themselves."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from bulkjobs import keys
from models import Job
from models.engine import get_engine
from models.seed import SeededProject, SeedResult
from tests.e2e import procfile
from tests.e2e.conftest import Proc, free_port, wait_for
from tests.e2e.helpers import Api, Subscriber, job_events, terminal_of
from tests.sentinel import MASTER, SentinelCluster, sentinel_cluster
from tests.worker.helpers import assert_consistent, entries, records

pytestmark = [pytest.mark.e2e, pytest.mark.heavy]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
#: Seconds to wait for a job's terminal event (a bound on a hang, not a timing target).
WAIT = 120


@pytest.fixture
def cluster() -> Iterator[SentinelCluster]:
    with sentinel_cluster() as c:
        yield c


@dataclass
class Deployment:
    web: str
    stream: str  # the websocket URL
    env: dict[str, str]
    worker: Proc
    beat: Proc


@pytest.fixture
def system(cluster: SentinelCluster, seeded: SeedResult) -> Iterator[Deployment]:
    """Web, worker, beat and stream on the Sentinel deployment only: ``REDIS_URL``'s host
    has no Redis, ``BROKER_URL`` is unset.  The beat sends the reaper every second."""
    env = {"REDIS_SENTINELS": cluster.addresses, "REDIS_SENTINEL_MASTER": MASTER,
           "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "BROKER_URL": ""}
    web_port, stream_port = free_port(), free_port()
    procs: list[Proc] = []
    try:
        procs.append(procfile.web(web_port, **env))
        procs.append(worker := procfile.worker(f"sentinel-{time.time_ns()}", concurrency=1,
                                               **env))
        procs.append(procfile.stream(stream_port, **env))
        procs.append(beat := procfile.start("beat", **env, REAPER_INTERVAL="1"))
        yield Deployment(f"http://127.0.0.1:{web_port}", f"ws://127.0.0.1:{stream_port}/sync",
                         env, worker, beat)
    finally:
        procfile.stop_all(procs)


def reaps(worker: Proc) -> int:
    """Reaper runs the worker took from the broker and finished."""
    return sum("bulkjobs.reap[" in line and "succeeded" in line
               for line in worker.output().splitlines())


def cli_stats(env: dict[str, str]) -> dict[str, Any]:
    """``bulkjobs stats --json`` run as a process with ``env``."""
    done = subprocess.run([str(BIN / "bulkjobs"), "stats", "--json"], cwd=ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def submit(api: Api, selection: list[Any]) -> tuple[str, list[int]]:
    """Queue a delete, asking again while the answer is a 503 with ``Retry-After`` (a switch
    of primary); any other failure fails the test.  The token and the 503s seen."""
    unavailable: list[int] = []
    deadline = time.monotonic() + WAIT
    while True:
        r = api.http.post(f"/api/p/{api.project}/records/bulk/delete",
                          json={"selection": selection},
                          headers={"Authorization": f"Bearer {api.jwt}"})
        if r.status_code == 200:
            return str(r.json()["result"]["job.token"]), unavailable
        assert r.status_code == 503, (r.status_code, r.text)
        assert r.json()["success"] is False, r.text
        assert int(r.headers["Retry-After"]) >= 1, r.headers
        unavailable.append(r.status_code)
        assert time.monotonic() < deadline, "still 503 long after the failover"
        time.sleep(int(r.headers["Retry-After"]))


async def run_watched(api: Api, stream_url: str, project: SeededProject, head: str
                      ) -> list[dict[str, Any]]:
    """Queue a delete of ``head``'s children through the web with a subscriber of the
    stream server watching; the job's events it received."""
    async with Subscriber(stream_url, api.jwt) as sub:
        await sub.subscribe(project.gid, cc_cursor=api.cc_cursor())
        token, _ = submit(api, [{"children": head}])
        await sub.until(terminal_of(token), timeout=WAIT)
        return job_events(sub.events, token)


@pytest.mark.timeout(600)
def test_every_process_follows_the_primary_sentinel_names(
        cluster: SentinelCluster, system: Deployment, seeded: SeedResult) -> None:
    """With only Sentinel to find Redis, a job queued through the web runs on the worker and
    its events reach a websocket subscriber, the beat's tasks reach the worker and the CLI
    sees the live worker; after the primary is killed and a replica promoted, submits
    succeed (or answer 503 with Retry-After, never 500), a new job runs to done with its
    events relayed, and the beat, the worker's heartbeat and the CLI carry on."""
    project = seeded.projects[0]
    api = Api(system.web, project.gid)
    api.auth(project.api_key)

    first = asyncio.run(run_watched(api, system.stream, project, project.heads[0]))
    assert first[-1]["data"]["status"] == "done", first[-1]
    wait_for(lambda: reaps(system.worker) > 0, "a reaper run sent by the beat", timeout=WAIT)
    stats = cli_stats(system.env)
    assert any(h.startswith("worker-sentinel-") for h in stats["workers"]["hostnames"]), stats
    assert isinstance(stats["queue_depth"], int), stats

    old = cluster.kill_primary()
    # A submit at once, during the switch: answered 200 or 503 with Retry-After.
    submit(api, [project.heads[2]])
    new = cluster.wait_failover(old)
    failed_over = time.time()
    assert new != old
    # The new primary counts as a Redis restart for the sync log (SPEC: history from before
    # it is incomplete): a subscriber from before is told to resume.  Subscribe once the
    # stream server reads the new primary.
    stream_http = system.stream.replace("ws://", "http://").removesuffix("/sync")
    wait_for(lambda: httpx.get(f"{stream_http}/healthz").status_code == 200,
             "the stream server reading the new primary", timeout=WAIT)

    second = asyncio.run(run_watched(api, system.stream, project, project.heads[1]))
    assert second[-1]["data"]["status"] == "done", second[-1]
    before = reaps(system.worker)
    wait_for(lambda: reaps(system.worker) > before, "a reaper run after the failover",
             timeout=WAIT)
    with httpx.Client(base_url=system.web, timeout=30) as http:
        assert http.get("/healthz").status_code == 200
    [hostname] = [h for h in stats["workers"]["hostnames"] if h.startswith("worker-sentinel-")]
    promoted = cluster.node(new).client()
    wait_for(lambda: (promoted.zscore(keys.workers(), hostname) or 0) > failed_over,
             "the worker's heartbeat on the new primary", timeout=WAIT)
    assert hostname in cli_stats(system.env)["workers"]["hostnames"]


def job_row(token: str) -> Any:
    with get_engine().connect() as conn:
        return conn.execute(select(Job.__table__).where(Job.__table__.c.token == token)).one()


def processed(token: str) -> int:
    info = job_row(token).info or {}
    total, remaining = info.get("total"), info.get("remaining")
    return total - remaining if isinstance(total, int) and isinstance(remaining, int) else 0


@pytest.mark.timeout(600)
def test_a_running_job_rides_through_a_failover(
        cluster: SentinelCluster, system: Deployment, seeded: SeedResult) -> None:
    """The primary killed under a running job (small batches, one long slice): the job is
    handed back while no primary answers and carries on on the promoted one, ending done
    with no failure counted and every record deleted once."""
    project = seeded.projects[0]
    recs = records(project.gid)
    targets = sorted((g for g, r in recs.items() if r.treelevel == 3 and r.status != "deleted"),
                     key=lambda g: recs[g].id)
    system.worker.stop()
    worker = procfile.worker(f"sentinel-long-{time.time_ns()}", concurrency=1,
                             **system.env, BATCH_SIZE="4", SLICE_SECONDS="1000")
    try:
        api = Api(system.web, project.gid)
        api.auth(project.api_key)
        token, _ = submit(api, targets)
        wait_for(lambda: processed(token) > 40, "progress before the failover", timeout=WAIT)
        old = cluster.kill_primary()
        cluster.wait_failover(old)
        wait_for(lambda: job_row(token).status in ("done", "rejected"), "the job finished",
                 timeout=300)
    finally:
        worker.stop()
    row = job_row(token)
    assert row.status == "done", row.info
    assert row.failures == 0 and "error" not in row.info
    assert (row.info["total"], row.info["remaining"], row.info["failed"]) == (len(targets), 0, 0)
    after = records(project.gid)
    assert all(after[g].status == "deleted" for g in targets)
    assert len(entries(token, "delete")) == len(targets)
    assert_consistent(project.gid)


@pytest.mark.timeout(600)
def test_a_subscriber_rides_through_a_failover_and_misses_nothing(
        cluster: SentinelCluster, system: Deployment, seeded: SeedResult) -> None:
    """A websocket subscriber connected before the primary is SIGKILLed stays connected (no
    4008) and receives the events of a job queued after the promotion, on cursors that go on
    growing; another resuming from a cursor of before the failover is answered
    ``recovered: true`` and receives every job event the first one saw after that cursor."""
    project = seeded.projects[0]
    api = Api(system.web, project.gid)
    api.auth(project.api_key)

    async def scenario() -> dict[str, Any]:
        async with Subscriber(system.stream, api.jwt) as sub:
            await sub.subscribe(project.gid, cc_cursor=api.cc_cursor())
            first, _ = await asyncio.to_thread(submit, api, [{"children": project.heads[0]}])
            await sub.until(terminal_of(first), timeout=WAIT)
            mark = max(e["cursor"] for e in sub.events if e["type"] == "cc")
            old = await asyncio.to_thread(cluster.kill_primary)
            await asyncio.to_thread(cluster.wait_failover, old)
            second, _ = await asyncio.to_thread(submit, api, [{"children": project.heads[1]}])
            await sub.until(terminal_of(second), timeout=WAIT)
            assert sub.ws.close_code is None
            seen = list(sub.events)
        async with Subscriber(system.stream, api.jwt) as again:
            resumed = await again.subscribe(project.gid, cc_cursor=mark)
            await again.until(terminal_of(second), timeout=WAIT)
        return {"first": first, "second": second, "mark": mark, "seen": seen,
                "resumed": resumed, "again": again.events}

    out = asyncio.run(scenario())
    cc = [e["cursor"] for e in out["seen"] if e["type"] == "cc"]
    assert cc == sorted(set(cc))
    assert job_events(out["seen"], out["second"])[-1]["data"]["status"] == "done"
    assert out["resumed"]["recovered"] is True, out["resumed"]
    after_mark = [e for e in out["seen"] if e["type"] == "cc" and e["cursor"] > out["mark"]]
    again = [e for e in out["again"] if e["type"] == "cc" and e["cursor"] > out["mark"]]
    assert [e["cursor"] for e in again][:len(after_mark)] == [e["cursor"] for e in after_mark]
    assert job_events(again, out["second"]) == job_events(after_mark, out["second"])
