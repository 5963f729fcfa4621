"""The catalogue bench's processes: a real Celery worker per timed job, the web process the
submit probe talks to, the probe itself, and the wait for the jobs' terminal events.

* **worker** — ``celery -A worker.app worker`` (prefork, ``--concurrency`` children, as in
  the Procfile with task events on), started before the clock and stopped after the job,
  in a session of its own; its pool children's peak RSS (``VmHWM``) is read after the job.
* **web** — ``python -m uvicorn api.app:app``, one process, as in the Procfile.  With
  ``--probe-queue separate`` (the default) it runs under a Redis prefix of its own, so the
  one-gid jobs it queues go to a Celery queue no worker reads: the timed job is measured
  without them, and they still write their job rows into the same database, which is what
  the probe is about (a running job must not keep another writer waiting).
* **probe** — one keep-alive HTTP/1.1 connection (``http.client``: far less client CPU than
  httpx) posting ``records/bulk/delete`` with one gid of another project at a steady rate;
  each latency is request written → answer read.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import BIN, ROOT, process


def log(msg: str) -> None:
    print(f"[catalogue {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(p) for p in path.read_text().split()]
    except OSError:
        return []


def hwm_mib(pid: int) -> float:
    """Peak resident set size (``VmHWM``) of a process, in MiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


def stop(proc: subprocess.Popen[bytes], grace: float = 30) -> None:
    """SIGTERM to the process (a Celery worker then stops its pool itself, after the task
    in hand), then SIGKILL to its whole group after ``grace`` seconds."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # anything left of the group
    except ProcessLookupError:
        pass
    if proc.poll() is None:
        proc.wait()


@contextmanager
def worker(env: dict[str, str], logdir: Path, *, concurrency: int) -> Iterator[
        tuple[subprocess.Popen[bytes], Path]]:
    """A real worker process with ``env``, and its log file; stopped (its whole group) on
    the way out."""
    out = logdir / f"worker-{time.time_ns()}.log"
    proc = subprocess.Popen(
        [str(BIN / "celery"), "-A", "worker.app", "worker", "-E", "--loglevel", "INFO",
         "--concurrency", str(concurrency), "--without-mingle", "--without-gossip",
         "--hostname", f"catalogue-{time.time_ns()}@%h"],
        env={**os.environ, **env}, cwd=ROOT, stdout=out.open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while len(children(proc.pid)) < concurrency:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"worker did not start: {out.read_text()[-2000:]}")
            time.sleep(0.1)
        time.sleep(1.0)  # the consumer connects after the pool is up
        yield proc, out
    finally:
        stop(proc)


def tail(path: Path, lines: int = 8) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


@contextmanager
def web(env: dict[str, str], logdir: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A real ``uvicorn api.app:app`` on ``port``, up once ``/healthz`` answers 200."""
    def ready() -> bool:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        c.request("GET", "/healthz")
        return c.getresponse().status == 200

    with process([str(BIN / "python"), "-m", "uvicorn", "api.app:app", "--host", "127.0.0.1",
                  "--port", str(port), "--no-access-log", "--log-level", "warning"],
                 ready=ready, log=logdir / "web.log", env=env) as proc:
        yield proc


@dataclass
class Probe:
    """One-gid ``records/bulk/delete`` submits to ``project`` at ``rate`` per second, in a
    thread, from :meth:`start` to :meth:`stop`."""

    port: int
    project: str
    api_key: str
    gids: list[str]
    rate: float
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self.latencies, self.statuses = [], {}
        self._stop.clear()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        conn.request("POST", f"/api/p/{self.project}/auth", json.dumps(
            {"api_key": self.api_key}), {"Content-Type": "application/json"})
        answer = conn.getresponse()
        answer.read()
        jwt = answer.getheader("authorization")
        if answer.status != 200 or not jwt:
            raise RuntimeError(f"probe auth failed: {answer.status}")
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {jwt}"}
        self._thread = threading.Thread(target=self._run, args=(conn, headers), daemon=True)
        self._thread.start()

    def _run(self, conn: http.client.HTTPConnection, headers: dict[str, str]) -> None:
        path = f"/api/p/{self.project}/records/bulk/delete"
        interval = 1 / self.rate
        due = time.perf_counter()
        n = 0
        while not self._stop.is_set():
            body = json.dumps({"selection": [self.gids[n % len(self.gids)]]})
            n += 1
            start = time.perf_counter()
            try:
                conn.request("POST", path, body, headers)
                answer = conn.getresponse()
                answer.read()
                status = answer.status
            except (OSError, http.client.HTTPException):
                status = 0
                conn.close()
            self.latencies.append((time.perf_counter() - start) * 1000)
            self.statuses[status] = self.statuses.get(status, 0) + 1
            due += interval
            self._stop.wait(max(0.0, due - time.perf_counter()))
        conn.close()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)
        lat = sorted(self.latencies)
        return {"n": len(lat), "p50_ms": round(pct(lat, 50), 2), "p99_ms": round(pct(lat, 99), 2),
                "max_ms": round(lat[-1], 2) if lat else None,
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())}}


def pct(ordered: list[float], p: float) -> float:
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def wait_terminal(synclog: Any, tokens: Sequence[str], *, after: int, timeout: float,
                  last: dict[str, dict[str, Any]] | None = None
                  ) -> tuple[dict[str, dict[str, Any]], int]:
    """Read the ``cc`` space from ``after`` until every token has its terminal event or
    ``timeout`` seconds pass; (token → terminal event body, progress events seen).  ``last``
    gets each unfinished token's latest ``processing`` info."""
    from bulkjobs import keys

    wanted = set(tokens)
    ends: dict[str, dict[str, Any]] = {}
    progress = 0
    deadline = time.monotonic() + timeout
    while len(ends) < len(wanted) and time.monotonic() < deadline:
        page = synclog.read(keys.CC_SPACE, after)
        for event in page.events:
            after = event.cursor
            if event.key not in wanted:
                continue
            body = event.as_dict()
            status = body["data"]["status"]
            if status == "processing":
                progress += 1
                if last is not None:
                    last[event.key] = body["data"].get("info") or {}
            elif status in ("done", "rejected"):
                ends[event.key] = body
        if not page.events:
            time.sleep(0.002)
    return ends, progress
