"""Real processes for end-to-end tests: a uvicorn web process, a Celery worker and a stream
server, started from the same commands as the Procfile, on free ports, sharing the test
session's database, Redis prefix and JWT secret through the environment."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from tests.e2e.browser import browser  # noqa: F401  (a fixture of the browser tests)

BIN = Path(sys.executable).parent
LOGS = Path(os.environ["DATA_DIR"]) / "logs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    name: str
    args: list[str]
    env: dict[str, str]
    popen: subprocess.Popen[bytes] | None = None
    log: Path = field(default_factory=Path)

    def start(self) -> Proc:
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log = LOGS / f"{self.name}-{time.time_ns()}.log"
        fh = self.log.open("wb")
        self.popen = subprocess.Popen(self.args, env=self.env, stdout=fh, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        if self.popen is None or self.popen.poll() is not None:
            return self.popen.returncode if self.popen else None
        os.killpg(self.popen.pid, sig)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            return self.popen.wait(timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def wait_for(check, what: str, timeout: float = 30.0,  # type: ignore[no-untyped-def]
             proc: Proc | None = None) -> None:
    """Poll ``check`` until it is true.  With ``proc`` (the process being waited for), a
    process that exits fails at once, and a failure says the end of what it printed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # not up yet
            pass
        if proc is not None and proc.popen is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.popen.returncode}:\n"
                               f"{proc.output()[-3000:]}")
        time.sleep(0.1)
    printed = f"; it printed:\n{proc.output()[-3000:]}" if proc is not None else ""
    raise TimeoutError(f"{what} did not come up in {timeout} s{printed}")


@dataclass
class System:
    web_url: str
    stream_url: str
    stream_http: str
    procs: dict[str, Proc]

    def worker(self, name: str = "worker", concurrency: int = 1, **env: str) -> Proc:
        proc = Proc(name, [str(BIN / "celery"), "-A", "worker.app", "worker", "-E",
                           "--loglevel", "INFO", "--concurrency", str(concurrency),
                           "--hostname", f"{name}-{time.time_ns()}@%h", "--without-mingle",
                           "--without-gossip"],
                    {**os.environ, **ENV_FOR_JOBS, **env}).start()
        wait_for(lambda: "ready." in proc.output(), f"celery {name}", proc=proc)
        self.procs[name] = proc
        return proc

    @contextmanager
    def own_worker(self, name: str, **env: str) -> Iterator[Proc]:
        """A worker with ``env`` over the jobs' settings in place of the shared one, which is
        stopped meanwhile (so that it takes none of the test's jobs) and started again after."""
        shared = self.procs.pop("worker", None)
        if shared is not None:
            shared.stop()
        try:
            yield self.worker(name, concurrency=1, **env)
        finally:
            own = self.procs.pop(name, None)
            if own is not None:
                own.stop()
            self.worker()

    def stream(self, port: int | None = None) -> Proc:
        port = port or int(self.stream_url.rsplit(":", 1)[1].split("/")[0])
        proc = Proc("stream", [sys.executable, "-m", "stream"],
                    {**os.environ, "STREAM_PORT": str(port)}).start()
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200,
                 "stream", proc=proc)
        self.procs["stream"] = proc
        return proc


ENV_FOR_JOBS = {"BATCH_SIZE": "3", "PROGRESS_INTERVAL": "0.05", "HEARTBEAT_INTERVAL": "0.5"}


@pytest.fixture(scope="package")
def system(schema: Engine) -> Iterator[System]:
    """Web, worker and stream as real processes for the tests of this package (stopped after
    them, so that no later test finds a worker taking its queued jobs)."""
    env = {**os.environ, **ENV_FOR_JOBS}
    web_port, stream_port = free_port(), free_port()
    web = Proc("web", [sys.executable, "-m", "uvicorn", "api.app:app", "--host", "127.0.0.1",
                       "--port", str(web_port), "--timeout-keep-alive", "75"],
               {**env, "STREAM_PORT": str(stream_port)}).start()
    sys_ = System(f"http://127.0.0.1:{web_port}", f"ws://127.0.0.1:{stream_port}/sync",
                  f"http://127.0.0.1:{stream_port}", {"web": web})
    try:
        wait_for(lambda: httpx.get(f"{sys_.web_url}/healthz").status_code == 200, "web",
                 proc=web)
        sys_.worker()
        sys_.stream(stream_port)
        yield sys_
    finally:
        for proc in sys_.procs.values():
            proc.stop()


@pytest.fixture
def redis_client():  # type: ignore[no-untyped-def]
    """The test Redis, *not* emptied: the session's processes keep reading its sync log, and
    emptying it under them would look like a Redis restart that lost its data."""
    from bulkjobs.connections import get_redis

    return get_redis()
