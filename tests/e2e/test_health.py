"""Health for orchestrators, on the real web and stream processes (the Procfile's commands):
``/livez`` answers 200 while the process runs, whatever Redis and the database do;
``/readyz`` (and ``/healthz``) answer 503 while either is away and 200 again once it is back;
``/metrics`` asks for ``METRICS_TOKEN`` when it is set."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.e2e import procfile
from tests.e2e.conftest import Proc, free_port, wait_for
from tests.e2e.redis_server import PrivateRedis, private_redis_server

pytestmark = pytest.mark.e2e

#: No database answers here: nothing listens on port 1.
NO_DATABASE = "postgresql://postgres@127.0.0.1:1/nothing"


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    with private_redis_server() as server:
        yield server


def statuses(base: str) -> dict[str, int]:
    return {path: httpx.get(f"{base}{path}", timeout=10).status_code
            for path in ("/livez", "/readyz", "/healthz")}


def started(kind: str, **env: str) -> tuple[Proc, str]:
    """A web or stream process, serving HTTP (not necessarily ready) when this returns."""
    port = free_port()
    port_name = "WEB_PORT" if kind == "web" else "STREAM_PORT"
    proc = procfile.start(kind, f"{kind}-{port}", **{port_name: str(port)}, **env)
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: _answers(f"{base}/livez"), f"{kind} on {port}", timeout=60, proc=proc)
    return proc, base


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.parametrize("kind", ["web", "stream"])
def test_live_while_redis_is_away_ready_again_when_it_is_back(
    services: object, private_redis: PrivateRedis, kind: str,
) -> None:
    proc, base = started(kind, REDIS_URL=private_redis.url, BROKER_URL=private_redis.url)
    try:
        wait_for(lambda: statuses(base) == {"/livez": 200, "/readyz": 200, "/healthz": 200},
                 f"{kind} ready", timeout=30)
        private_redis.kill()
        wait_for(lambda: statuses(base) == {"/livez": 200, "/readyz": 503, "/healthz": 503},
                 f"{kind} not ready without Redis", timeout=30)
        assert httpx.get(f"{base}/readyz", timeout=10).json()["status"] == "unavailable"
        private_redis.start()
        wait_for(lambda: statuses(base) == {"/livez": 200, "/readyz": 200, "/healthz": 200},
                 f"{kind} ready again", timeout=60)
    finally:
        proc.stop()


@pytest.mark.parametrize("kind", ["web", "stream"])
def test_live_but_not_ready_without_a_database(services: object, kind: str) -> None:
    proc, base = started(kind, DATABASE_URL=NO_DATABASE)
    try:
        wait_for(lambda: statuses(base)["/readyz"] == 503, f"{kind} not ready", timeout=30)
        assert statuses(base)["/livez"] == 200
        answer = httpx.get(f"{base}/readyz", timeout=10).json()
        database = answer["checks"]["database"] if kind == "web" else answer["database"]
        assert database not in ("ok", True)
    finally:
        proc.stop()


@pytest.mark.parametrize("kind", ["web", "stream"])
def test_metrics_ask_for_the_metrics_token_when_it_is_set(services: object, kind: str) -> None:
    proc, base = started(kind, METRICS_TOKEN="scrape-" + "x" * 24)
    try:
        assert httpx.get(f"{base}/metrics", timeout=10).status_code == 401
        wrong = {"Authorization": "Bearer scrape-wrong"}
        assert httpx.get(f"{base}/metrics", headers=wrong, timeout=10).status_code == 401
        right = {"Authorization": "Bearer scrape-" + "x" * 24}
        answer = httpx.get(f"{base}/metrics", headers=right, timeout=10)
        assert answer.status_code == 200
        assert "# TYPE" in answer.text
    finally:
        proc.stop()


def test_the_web_keeps_an_idle_connection_longer_than_pooling_clients(services: object) -> None:
    """A client that pools connections (httpx keeps an idle one 5 s) reuses one after a pause:
    the web (the Procfile's command) still has it open, so the request is answered rather
    than reset (uvicorn's own default closes idle connections after 5 s, the same moment)."""
    import http.client
    import time

    proc, base = started("web")
    conn = http.client.HTTPConnection("127.0.0.1", int(base.rsplit(":", 1)[1]), timeout=10)
    try:
        conn.request("GET", "/livez")
        first = conn.getresponse()
        assert (first.status, first.read()) == (200, b'{"status":"ok"}')
        time.sleep(6.5)  # longer than httpx's keep-alive expiry and uvicorn's default
        try:  # the same connection: http.client opens no new one while it has a socket
            conn.request("GET", "/livez")
            again: int | str = conn.getresponse().status
        except (ConnectionError, http.client.HTTPException) as exc:
            again = repr(exc)
        assert again == 200
    finally:
        conn.close()
        proc.stop()
