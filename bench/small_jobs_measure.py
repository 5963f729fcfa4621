"""The small-jobs bench's measuring helpers: its processes (Celery workers, process trees
and their CPU), the measurement window around a timed run (Redis ``MONITOR`` command counts,
CPU samples of the process groups and PostgreSQL backends, ``redis-server`` CPU, the jobs'
terminal events read from the sync log), and the lean HTTP/1.1 client that sends the requests.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.catalogue_run import stop, tail
from bench.common import ROOT
from bench.loadgen import tree_cpu_seconds

#: Worker processes started for each run (``python -m worker`` or the raw Celery app).
WORKERS = 2
TICK = os.sysconf("SC_CLK_TCK")


# -- processes ------------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return out


def proc_cpu(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK


@contextmanager
def celery_workers(argv: list[str], name: str, logdir: Path,
                   env: dict[str, str]) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``WORKERS`` worker processes of ``argv`` + ``--hostname <name>-<n>@%h``, up once each
    logged ``ready.``; stopped (SIGTERM, then their groups SIGKILLed) on the way out."""
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    try:
        for n in range(1, WORKERS + 1):
            out = logdir / f"{name}-{n}-{time.time_ns()}.log"
            logs.append(out)
            procs.append(subprocess.Popen(
                [*argv, "--hostname", f"{name}-{n}@%h"], cwd=ROOT, stdout=out.open("wb"),
                stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "PYTHONPATH": str(ROOT), **env}))
        deadline = time.monotonic() + 120
        for proc, out in zip(procs, logs, strict=True):
            while b" ready." not in out.read_bytes():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not start: {tail(out, 20)}")
                time.sleep(0.1)
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            stop(proc, grace=30)


# -- measuring ------------------------------------------------------------------------------


class Monitor:
    """``redis-cli MONITOR`` piped through ``grep`` for one Redis database into a file;
    :meth:`mark` writes a marker command and waits until it is in the file."""

    def __init__(self, url: str, path: Path) -> None:
        import redis

        parts = urlsplit(url)
        self.db = int((parts.path or "/0").lstrip("/") or 0)
        self.path = path
        cli = shutil.which("redis-cli")
        if cli is None:
            raise SystemExit("redis-cli is needed (MONITOR)")
        args = [cli, "-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 6379)]
        if parts.password:
            args += ["-a", parts.password, "--no-auth-warning"]
        self.cli = subprocess.Popen([*args, "monitor"], stdout=subprocess.PIPE,
                                    start_new_session=True)
        self.grep = subprocess.Popen(["grep", "--line-buffered", "-F", f" [{self.db} "],
                                     stdin=self.cli.stdout, stdout=path.open("wb"),
                                     env={**os.environ, "LC_ALL": "C"}, start_new_session=True)
        assert self.cli.stdout is not None
        self.cli.stdout.close()
        self.redis = redis.Redis.from_url(url)
        self.marker = f"small-jobs-mark-{uuid.uuid4().hex}"

    def mark(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while self.marker.encode() not in self.path.read_bytes():
            if time.monotonic() > deadline:
                raise RuntimeError("MONITOR shows nothing")
            self.redis.echo(self.marker)
            time.sleep(0.05)

    def close(self) -> list[str]:
        self.mark()  # everything before it is in the file
        self.cli.terminate()
        self.cli.wait(10)
        self.grep.wait(10)
        self.redis.close()
        return self.path.read_text(errors="replace").splitlines()


def count_commands(lines: list[str], owners: dict[int, str], skip: set[str]
                   ) -> tuple[Counter[str], Counter[str], Counter[str]]:
    """(commands sent by clients, commands run inside Lua scripts, sent commands by owner)
    of MONITOR lines; lines of the clients ``skip`` (``ip:port``) and ECHOs are left out."""
    sent: Counter[str] = Counter()
    lua: Counter[str] = Counter()
    by_owner: Counter[str] = Counter()
    for line in lines:
        try:
            head, rest = line.split("] ", 1)
            addr = head.split(" [", 1)[1].split(" ", 1)[1]
            command = rest.split('"', 2)[1].upper()
        except (IndexError, ValueError):
            continue
        if command == "ECHO" or addr in skip:
            continue
        if addr == "lua":
            lua[command] += 1
            continue
        sent[command] += 1
        port = int(addr.rsplit(":", 1)[1]) if ":" in addr else -1
        by_owner[owners.get(port, "unmapped")] += 1
    return sent, lua, by_owner


class Sampler:
    """Every 0.25 s: which of the watched process trees owns each local TCP port (for the
    MONITOR lines), and the CPU seconds of the PostgreSQL backends of the database."""

    def __init__(self, groups: dict[str, list[int]], pg: Any | None, dbname: str) -> None:
        self.groups, self.pg, self.dbname = groups, pg, dbname
        self.owners: dict[int, str] = {}
        self.backend_first: dict[int, float] = {}
        self.backend_last: dict[int, float] = {}
        self._stop = threading.Event()
        self._first = True
        self.sample()
        self._first = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self.sample()

    def sample(self) -> None:
        inodes: dict[int, str] = {}
        for name, roots in [("bench", []), *self.groups.items()]:
            if not roots:  # the bench itself, not its children
                roots, recurse = [os.getpid()], False
            else:
                recurse = True
            for root in roots:
                for pid in descendants(root) if recurse else [root]:
                    try:
                        fds = list(Path(f"/proc/{pid}/fd").iterdir())
                    except OSError:
                        continue
                    for fd in fds:
                        try:
                            target = os.readlink(fd)
                        except OSError:
                            continue
                        if target.startswith("socket:["):
                            inodes[int(target[8:-1])] = name
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                rows = Path(table).read_text().splitlines()[1:]
            except OSError:
                continue
            for row in rows:
                cols = row.split()
                owner = inodes.get(int(cols[9]))
                if owner is not None:
                    self.owners[int(cols[1].rsplit(":", 1)[1], 16)] = owner
        if self.pg is not None:
            from sqlalchemy import text

            with self.pg.connect() as conn:
                pids = [r[0] for r in conn.execute(text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = :d"), {"d": self.dbname})]
            for pid in pids:
                cpu = proc_cpu(pid)
                if cpu is None:
                    continue
                self.backend_first.setdefault(pid, cpu if self._first else 0.0)
                self.backend_last[pid] = cpu

    def stop(self) -> float:
        """The backends' CPU seconds since the first sample."""
        self._stop.set()
        self._thread.join(5)
        self.sample()
        return sum(self.backend_last[p] - self.backend_first[p] for p in self.backend_last)


class Terminals:
    """A thread following the ``cc`` space (``XREAD BLOCK``) from now on: each terminal
    event's token, status, job kind, failed items and arrival time."""

    def __init__(self, url: str, stream: str) -> None:
        import redis

        self.redis = redis.Redis.from_url(url)
        self.addr = str(self.redis.client_info()["addr"])
        self.stream = stream
        newest = self.redis.xrevrange(stream, count=1)
        self.last: Any = newest[0][0] if newest else b"0-0"
        self.ends: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            got = self.redis.xread({self.stream: self.last}, block=200, count=1000)
            now = time.perf_counter()
            for _, entries in got or []:
                for entry_id, fields in entries:
                    self.last = entry_id
                    status = fields.get(b"s", b"").decode()
                    if status not in ("done", "rejected"):
                        continue
                    data = json.loads(fields.get(b"d", b"{}")).get("data") or {}
                    info = data.get("info") or {}
                    with self.lock:
                        self.ends[fields[b"k"].decode()] = {
                            "status": status, "job": data.get("job"), "at": now,
                            "created_on": float(data.get("created_on") or 0),
                            "failed": int(info.get("failed") or 0),
                            "error": info.get("error")}

    def of(self, job: str, since: float) -> dict[str, dict[str, Any]]:
        with self.lock:
            return {t: e for t, e in self.ends.items()
                    if e["job"] == job and e["created_on"] >= since}

    def wait(self, job: str, since: float, count: int, timeout: float
             ) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            ends = self.of(job, since)
            if len(ends) >= count or time.monotonic() > deadline:
                return ends
            time.sleep(0.005)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.redis.close()


def redis_cpu(url: str) -> float:
    import redis

    r = redis.Redis.from_url(url)
    try:
        info = r.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    finally:
        r.close()


@dataclass
class Window:
    """What one timed window costs: CPU of the process trees, Redis commands, PostgreSQL
    transactions and backend CPU."""

    url: str
    groups: dict[str, list[int]]
    pg: Any | None
    dbname: str
    logdir: Path
    name: str
    skip: set[str] = field(default_factory=set)

    def __enter__(self) -> Window:
        self.monitor = Monitor(self.url, self.logdir / f"monitor-{self.name}.txt")
        self.monitor.mark()
        self.sampler = Sampler(self.groups, self.pg, self.dbname)
        self.xacts0 = self.xacts()
        self.cpu0 = {name: sum(tree_cpu_seconds(p) for p in roots)
                     for name, roots in self.groups.items()}
        self.redis_cpu0 = redis_cpu(self.url)
        self.self_cpu0 = time.process_time()
        self.load = [round(os.getloadavg()[0], 2)]
        return self

    def xacts(self) -> int | None:
        if self.pg is None:
            return None
        from sqlalchemy import text

        with self.pg.connect() as conn:
            return int(conn.execute(text(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = :d"),
                {"d": self.dbname}).scalar_one())

    def stop_clock(self) -> None:
        """The timed part is over: processes' CPU, Redis commands, load now."""
        self.cpu = {name: sum(tree_cpu_seconds(p) for p in roots) - self.cpu0[name]
                    for name, roots in self.groups.items()}
        self.self_cpu = time.process_time() - self.self_cpu0
        self.redis_cpu = redis_cpu(self.url) - self.redis_cpu0
        self.load.append(round(os.getloadavg()[0], 2))
        self.backend_cpu = self.sampler.stop()
        self.lines = self.monitor.close()

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            try:
                self.sampler.stop()
                self.monitor.close()
            except Exception:  # already failing
                pass

    def report(self, n: int, settle: float) -> dict[str, Any]:
        """Per-job figures (call after :meth:`stop_clock`; waits ``settle`` seconds on
        PostgreSQL for the backends' transaction counts)."""
        sent, lua, by_owner = count_commands(self.lines, self.sampler.owners, self.skip)
        out: dict[str, Any] = {
            "load": self.load,
            "cpu_ms_per_job": {k: round(v * 1000 / n, 3) for k, v in self.cpu.items()},
            "bench_cpu_ms_per_job": round(self.self_cpu * 1000 / n, 3),
            "redis_server_cpu_ms_per_job": round(self.redis_cpu * 1000 / n, 3),
            "redis_commands_per_job": round(sum(sent.values()) / n, 2),
            "redis_lua_commands_per_job": round(sum(lua.values()) / n, 2),
            "redis_commands_by_client": {k: round(v / n, 2) for k, v in
                                         sorted(by_owner.items())},
            "redis_commands": {k: round(v / n, 3) for k, v in sent.most_common()},
            "redis_lua_commands": {k: round(v / n, 3) for k, v in lua.most_common()},
        }
        if self.pg is not None:
            time.sleep(settle)
            assert self.xacts0 is not None
            out["pg_xacts_per_job"] = round(((self.xacts() or 0) - self.xacts0) / n, 2)
            out["cpu_ms_per_job"]["postgres"] = round(self.backend_cpu * 1000 / n, 3)
        return out


# -- the HTTP client ---------------------------------------------------------------------


def http_request(method: str, port: int, path: str, body: Any, headers: dict[str, str]
                 ) -> bytes:
    data = b"" if body is None else json.dumps(body).encode()
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}",
             "Content-Type: application/json", f"Content-Length: {len(data)}",
             *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


@dataclass
class Sent:
    start: float = 0.0  # perf_counter of the first request written
    start_wall: float = 0.0
    answered: float = 0.0  # perf_counter of the last answer read
    latencies: list[float] = field(default_factory=list)  # ms
    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)


async def send_all(port: int, requests: list[bytes], clients: int) -> Sent:
    """Each request once, over ``clients`` keep-alive connections opened beforehand, each
    waiting for its answer before the next."""
    out = Sent()
    todo = iter(requests)
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(clients)]

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for request in todo:
                t = time.perf_counter()
                try:
                    writer.write(request)
                    head = await reader.readuntil(b"\r\n\r\n")
                    status = int(head[9:12])
                    at = head.lower().index(b"content-length:") + 15
                    body = await reader.readexactly(int(head[at:head.index(b"\r\n", at)]))
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    status, body = 0, repr(exc).encode()
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                out.latencies.append((time.perf_counter() - t) * 1000)
                out.statuses[status] += 1
                if (status >= 300 or status == 0) and len(out.errors) < 5:
                    out.errors.append(f"{status} {body[:300].decode(errors='replace')}")
        finally:
            writer.close()

    out.start, out.start_wall = time.perf_counter(), time.time()
    await asyncio.gather(*(connection(r, w) for r, w in conns))
    out.answered = time.perf_counter()
    return out

