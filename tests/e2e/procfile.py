"""Processes started from the ``Procfile``'s own commands, with environment overrides, as
``honcho start`` would run them — but each on ports of its own, so that several instances of
one process type run side by side (honcho gives every instance the same ``STREAM_PORT``).

The commands run through ``/bin/sh -c`` (they use ``${WEB_PORT:-8000}``-style defaults) with
the test virtualenv first on ``PATH``.  The one change made to a command: ``--host 0.0.0.0``
becomes ``--host 127.0.0.1``, so that test servers listen on loopback only.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.e2e.conftest import ENV_FOR_JOBS, Proc, free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def procfile(path: Path = ROOT / "Procfile") -> dict[str, str]:
    """Process type -> command line, as written in the Procfile."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        name, sep, command = line.partition(":")
        if sep and name.strip() and not name.lstrip().startswith("#"):
            out[name.strip()] = command.strip()
    return out


def start(kind: str, name: str | None = None, **env: str) -> Proc:
    """Start one ``kind`` process (``web``, ``worker``, ``stream``) from its Procfile command
    with the test session's environment plus ``env``; returns at once."""
    command = procfile()[kind].replace("--host 0.0.0.0", "--host 127.0.0.1")
    full_env = {**os.environ, **env, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return Proc(name or kind, ["/bin/sh", "-c", f"exec {command}"], full_env).start()


def web(port: int, **env: str) -> Proc:
    """A web process on ``port``, up (``/healthz`` answers, 200 or 503) when this returns."""
    proc = start("web", f"web-{port}", WEB_PORT=str(port), **env)
    wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz").status_code in (200, 503),
             f"web on {port}", timeout=60, proc=proc)
    return proc


@contextmanager
def serving_web(**env: str) -> Iterator[tuple[Proc, str]]:
    """A web process (:func:`web`) on a free port for the ``with`` block: the process and its
    base URL; stopped after it."""
    port = free_port()
    proc = web(port, **env)
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


def worker(name: str, concurrency: int = 2, **env: str) -> Proc:
    """A Celery worker from the Procfile (``PORT`` names it), ready when this returns."""
    proc = start("worker", name, WORKER_CONCURRENCY=str(concurrency), PORT=name,
                 **{**ENV_FOR_JOBS, **env})
    wait_for(lambda: "ready." in proc.output(), f"celery {name}", timeout=60, proc=proc)
    return proc


def stream(port: int, **env: str) -> Proc:
    """A stream server on ``port``, healthy when this returns."""
    proc = start("stream", f"stream-{port}", STREAM_PORT=str(port), **env)
    wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200,
             f"stream on {port}", timeout=60, proc=proc)
    return proc


def stop_all(procs: list[Proc]) -> None:
    """SIGTERM each (they shut down cleanly), SIGKILL what does not stop in time."""
    for proc in procs:
        if proc.popen is not None and proc.popen.poll() is None:
            os.killpg(proc.popen.pid, 15)
    deadline = time.monotonic() + 20
    for proc in procs:
        if proc.popen is None:
            continue
        try:
            proc.popen.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.stop()
