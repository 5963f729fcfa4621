"""Shared pieces of the benchmark scripts: an isolated environment (temporary data dir,
database and Redis prefix), real processes, and percentiles.

Every script measures the product beside a baseline in the same run and prints both, their
ratio, and one JSON line for BENCHMARKS.md.  Nothing here asserts a time.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def isolate(database_url: str | None = None, **extra: str) -> Path:
    """Point this process (and its children) at a fresh data dir, database and Redis prefix.
    Must run before anything from the project is imported."""
    data = Path(tempfile.mkdtemp(prefix="bulkjobs-bench-"))
    os.environ["DATA_DIR"] = str(data)
    os.environ["DATABASE_URL"] = database_url or f"sqlite:///{data}/bench.db"
    os.environ["REDIS_PREFIX"] = "bjbench" + os.urandom(4).hex()
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/8")
    os.environ["BROKER_URL"] = os.environ["REDIS_URL"]
    os.environ.setdefault("JWT_SECRET", "bench-" + os.urandom(24).hex())
    os.environ.update(extra)
    return data


def reset_postgres(url: str) -> None:
    """Drop every table of a PostgreSQL benchmark database."""
    from sqlalchemy import create_engine, text

    from models.engine import normalise_url

    engine = create_engine(normalise_url(url))
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def cleanup_redis() -> None:
    from bulkjobs import keys
    from bulkjobs.connections import get_redis

    r = get_redis()
    stale = list(r.scan_iter(match=f"{keys.prefix()}*", count=1000))
    for i in range(0, len(stale), 1000):
        r.delete(*stale[i : i + 1000])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def process(args: list[str], *, ready: Callable[[], bool], log: Path,
            env: dict[str, str] | None = None, timeout: float = 60) -> Iterator[subprocess.Popen]:
    """A real process, started in its own session, stopped with SIGTERM (then SIGKILL)."""
    fh = log.open("wb")
    proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT,
                            env={**os.environ, **(env or {})}, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{args[0]} exited: {log.read_text()[-2000:]}")
            try:
                if ready():
                    break
            except Exception:  # not up yet
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{args} not ready: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def peak_rss_kib(pid: int) -> int:
    """VmHWM of a process, in KiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@contextmanager
def profiled(py_spy: str | None, pid: int, phase: str) -> Iterator[None]:
    """With ``--py-spy DIR`` (``py_spy``): sample a server process with py-spy during a
    phase (collapsed stacks in ``DIR/<phase>.txt``).  The sampler costs CPU of its own: use
    it to see where the time goes, not for the figures."""
    if not py_spy:
        yield
        return
    spy = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
    if spy is None:
        raise SystemExit("--py-spy: py-spy is not installed (pip install py-spy)")
    out = Path(py_spy) / f"{phase}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "250",
                             "--nonblocking", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    time.sleep(1.0)  # attached
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
