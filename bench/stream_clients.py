"""The stream bench orchestrator's handles on its child processes: the client processes
(:class:`Clients`, spoken to over pipes), the appender run, and the wait for deliveries.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import BIN, ROOT
from bench.stream_roles import cpu_seconds

#: The bench's entry point: the child processes are started as ``bench/stream.py --role``.
SCRIPT = str(Path(__file__).resolve().with_name("stream.py"))
#: Longest any single wait of the orchestrator may take.
WAIT = 120.0


class Clients:
    """Client processes holding ``n`` subscribers between them; spoken to over pipes."""

    def __init__(self, kind: str, url: str, n: int, procs: int, *, jwt: str, project: str,
                 logdir: Path, lifetime: float) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self.replies: list[queue.Queue[dict[str, Any]]] = []
        shares = [n // procs + (i < n % procs) for i in range(procs)]
        for i, share in enumerate(shares):
            cmd = [str(BIN / "python"), SCRIPT, "--role", "client", "--kind", kind,
                   "--url", url, "--conns", str(share), "--jwt", jwt, "--project", project,
                   "--lifetime", str(lifetime)]
            log = (logdir / f"client-{kind}-{n}-{i}.log").open("w")
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=log, text=True, cwd=ROOT, start_new_session=True)
            q: queue.Queue[dict[str, Any]] = queue.Queue()
            threading.Thread(target=self._pump, args=(proc, q), daemon=True).start()
            self.procs.append(proc)
            self.replies.append(q)

    @staticmethod
    def _pump(proc: subprocess.Popen[str], q: queue.Queue[dict[str, Any]]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            q.put(json.loads(line))

    def _get(self, i: int, timeout: float) -> dict[str, Any]:
        try:
            return self.replies[i].get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"client process {self.procs[i].pid} did not answer") from None

    def ready(self, timeout: float) -> tuple[int, int, list[str]]:
        ok = failed = 0
        errors: list[str] = []
        for i in range(len(self.procs)):
            reply = self._get(i, timeout)
            ok += reply["ready"]
            failed += reply["failed"]
            errors += reply["errors"]
        return ok, failed, errors

    def ask(self, cmd: dict[str, Any], timeout: float = 60) -> list[dict[str, Any]]:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(cmd) + "\n")
            proc.stdin.flush()
        return [self._get(i, timeout) for i in range(len(self.procs))]

    def count(self, ph: str) -> tuple[int, int]:
        """Events of phase ``ph`` received, and connections that got its last event."""
        replies = self.ask({"cmd": "count", "ph": ph})
        return sum(r["count"] for r in replies), sum(r["final"] for r in replies)

    def close(self) -> None:
        for proc in self.procs:
            try:
                assert proc.stdin is not None
                proc.stdin.write('{"cmd": "quit"}\n')
                proc.stdin.flush()
            except (BrokenPipeError, OSError):
                pass
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@contextmanager
def clients(kind: str, port: int, n: int, args: argparse.Namespace, ctx: dict[str, Any]
            ) -> Iterator[tuple[Clients, int, int]]:
    procs = max(1, min(args.clients, math.ceil(n / 50)))
    cl = Clients(kind, f"ws://127.0.0.1:{port}/sync", n, procs, jwt=ctx["jwt"],
                 project=ctx["project"], logdir=ctx["data"], lifetime=3600)
    try:
        ok, failed, errors = cl.ready(timeout=max(WAIT, n / 20))
        if errors:
            print(f"  ! {failed} of {n} {kind} connections failed: {errors}", file=sys.stderr)
        yield cl, ok, failed
    finally:
        cl.close()


def append(ctx: dict[str, Any], server_pid: int | None, *, phase: str, count: int, rate: float,
           batch: int = 1, tokens: int = 1, lat: bool = True) -> tuple[dict[str, Any], float]:
    """Run the appender process; returns its report (plus ``go``, the ``perf_counter`` when it
    started appending) and the server CPU time then."""
    cmd = [str(BIN / "python"), SCRIPT, "--role", "appender", "--phase", phase,
           "--count", str(count), "--rate", str(rate), "--batch", str(batch),
           "--tokens", str(tokens), "--project", ctx["project"]] + (["--lat"] if lat else [])
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=ROOT, start_new_session=True)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        json.loads(proc.stdout.readline())  # ready
        cpu0 = cpu_seconds(server_pid) if server_pid else 0.0
        go = time.perf_counter()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        limit = (count / rate if rate > 0 else 0) + WAIT
        out, _ = proc.communicate(timeout=limit)
        return {**json.loads(out.strip().splitlines()[-1]), "go": go}, cpu0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_delivered(cl: Clients, ph: str, expected: int, conns: int, timeout: float) -> int:
    """Poll the clients until every connection got the phase's last event (events arrive in
    order, so nothing more is coming; progress events may have been coalesced on the way),
    or nothing more came for a while.  Returns the events received."""
    deadline = time.monotonic() + timeout
    got, last_change, last_got = 0, time.monotonic(), -1
    while time.monotonic() < deadline:
        got, final = cl.count(ph)
        if got >= expected or final >= conns:
            return got
        if got != last_got:
            last_got, last_change = got, time.monotonic()
        elif time.monotonic() - last_change > 30:
            break
        time.sleep(0.02)
    return got

