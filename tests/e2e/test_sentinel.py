"""Redis through Sentinel, with real processes: a web, a worker and a stream server (the
Procfile's commands) given ``REDIS_SENTINELS`` and a ``REDIS_URL`` that points at nothing
find the primary through three sentinels of a private deployment (:mod:`tests.sentinel`) —
for the sync log, the rate limiter, the heartbeats and the Celery broker.  Once the primary
is SIGKILLed and a replica promoted, they find the new one by themselves."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from models.seed import SeededProject, SeedResult
from tests.e2e import procfile
from tests.e2e.conftest import Proc, free_port, wait_for
from tests.e2e.helpers import Api, Subscriber, job_events, terminal_of
from tests.sentinel import MASTER, SentinelCluster, sentinel_cluster

pytestmark = pytest.mark.e2e

#: Seconds to wait for a job's terminal event (a bound on a hang, not a timing target).
WAIT = 120


@pytest.fixture
def cluster() -> Iterator[SentinelCluster]:
    with sentinel_cluster() as c:
        yield c


@pytest.fixture
def system(cluster: SentinelCluster, seeded: SeedResult) -> Iterator[tuple[str, str]]:
    """Web, worker and stream on the Sentinel deployment only: ``REDIS_URL``'s host has no
    Redis, ``BROKER_URL`` is unset.  The web and stream base URLs."""
    env = {"REDIS_SENTINELS": cluster.addresses, "REDIS_SENTINEL_MASTER": MASTER,
           "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "BROKER_URL": ""}
    web_port, stream_port = free_port(), free_port()
    procs: list[Proc] = []
    try:
        procs.append(procfile.web(web_port, **env))
        procs.append(procfile.worker(f"sentinel-{time.time_ns()}", concurrency=1, **env))
        procs.append(procfile.stream(stream_port, **env))
        yield f"http://127.0.0.1:{web_port}", f"ws://127.0.0.1:{stream_port}/sync"
    finally:
        procfile.stop_all(procs)


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
        cluster: SentinelCluster, system: tuple[str, str], seeded: SeedResult) -> None:
    """With only Sentinel to find Redis, a job queued through the web runs on the worker and
    its events reach a websocket subscriber; after the primary is killed and a replica
    promoted, submits succeed (or answer 503 with Retry-After, never 500) and a new job
    runs to done with its events relayed."""
    web, stream_url = system
    project = seeded.projects[0]
    api = Api(web, project.gid)
    api.auth(project.api_key)

    first = asyncio.run(run_watched(api, stream_url, project, project.heads[0]))
    assert first[-1]["data"]["status"] == "done", first[-1]

    old = cluster.kill_primary()
    # A submit at once, during the switch: answered 200 or 503 with Retry-After.
    submit(api, [project.heads[2]])
    new = cluster.wait_failover(old)
    assert new != old
    # The new primary counts as a Redis restart for the sync log (SPEC: history from before
    # it is incomplete): a subscriber from before is told to resume.  Subscribe once the
    # stream server reads the new primary.
    stream_http = stream_url.replace("ws://", "http://").removesuffix("/sync")
    wait_for(lambda: httpx.get(f"{stream_http}/healthz").status_code == 200,
             "the stream server reading the new primary", timeout=WAIT)

    second = asyncio.run(run_watched(api, stream_url, project, project.heads[1]))
    assert second[-1]["data"]["status"] == "done", second[-1]
    with httpx.Client(base_url=web, timeout=30) as http:
        assert http.get("/healthz").status_code == 200
