"""``python -m stream`` as a real process: serving, SIGTERM, and dying loudly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bulkjobs import keys
from tests.stream.conftest import WAIT, jwt_for, recv

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(port: int, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "stream"], cwd=ROOT, text=True,
        env={**os.environ, "STREAM_PORT": str(port), **env},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )


def healthz(port: int) -> int | None:
    """Status of /healthz, or None while nothing listens."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def wait_for_health(proc: subprocess.Popen[str], port: int, want: int) -> None:
    """Poll /healthz until it answers ``want``; fail if the process dies or WAIT passes."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0]
        if healthz(port) == want:
            return
        time.sleep(0.05)
    pytest.fail(f"/healthz never answered {want}")


@pytest.fixture
def stream_port() -> int:
    return free_port()


def test_sigterm_closes_websockets_with_1001_and_exits_0(seeded, stream_port):
    """SIGTERM: every websocket is closed with 1001 (going away) and the process exits 0."""
    proc = start(stream_port)
    try:
        wait_for_health(proc, stream_port, 200)

        async def scenario() -> int | None:
            async with connect(f"ws://127.0.0.1:{stream_port}/sync") as ws:
                await ws.send(json.dumps({"op": "auth", "jwt": jwt_for(seeded, 0)}))
                assert (await recv(ws))["ok"] is True
                await ws.send(json.dumps({"op": "subscribe", "project": "*"}))
                assert (await recv(ws))["op"] == "subscribed"
                proc.send_signal(signal.SIGTERM)
                try:
                    async with asyncio.timeout(WAIT):
                        await ws.recv()
                except ConnectionClosed:
                    pass
                return ws.close_code

        assert asyncio.run(scenario()) == 1001
        output, _ = proc.communicate(timeout=WAIT)
        assert proc.returncode == 0, output
        assert "shutting down" in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_reader_death_exits_non_zero(seeded, redis_client, stream_port):
    """When the sync-log reader dies the process exits non-zero instead of hanging."""
    redis_client.set(keys.sync_stream("cc"), "not a stream")
    proc = start(stream_port)
    try:
        output, _ = proc.communicate(timeout=WAIT * 3)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        redis_client.delete(keys.sync_stream("cc"))
    assert proc.returncode not in (0, None), output
    assert "stream-reader stopped unexpectedly" in output


def test_healthz_is_503_without_redis_and_sigterm_still_exits_0(seeded, stream_port):
    """With Redis unreachable /healthz answers 503; the process keeps retrying, stops cleanly."""
    proc = start(stream_port, REDIS_URL="redis://127.0.0.1:1/9")
    try:
        wait_for_health(proc, stream_port, 503)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=WAIT)
        assert proc.returncode == 0, output
        assert "Redis unavailable" in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
