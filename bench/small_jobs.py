"""Many small jobs: single-record jobs of each kind queued through the API by concurrent
clients, beside raw Celery draining as many no-op tasks with the same worker set-up.

Set-up, as the Procfile runs it, with default settings (``RECORD_EVENTS`` on): one web
process (``python -m uvicorn api.app:app``) and two worker processes (``python -m worker -E
--loglevel INFO --concurrency 2 --hostname worker-<n>@%h``: prefork, two pool processes
each, plus each one's webhook deliveries' worker).  One project of a few thousand records
(``models.seed``, nothing deleted); each job takes one leaf record, a different one per job.

Kinds (``--kinds``), each ``--jobs`` requests from ``--clients`` keep-alive connections of a
lean HTTP/1.1 client (:mod:`bench.loadgen`'s way, one request in flight per connection), all
with the JWT of the project's API key:

* ``unicat-delete``: ``POST /api/p/<p>/records/bulk/delete {"selection": [gid]}`` (200 at
  once with the token);
* ``dato-restore``: ``POST /dato/p/<p>/versions/<version 0 id>/restore`` (202 at once;
  with 15 or more in flight the route's held session connections can exhaust the web's pool
  until its 30 s timeout, see BENCHMARKS.md: ``--kind-clients dato-restore=8``);
* ``plone-revert``: ``PATCH /plone/p/<p>/<gid>/@history {"version": 0}``, which answers when
  its job has ended (at most 30 s): so at most ``--clients`` of these jobs are in the system
  at a time.

The clock runs from the first request written (connections already open) to the last of the
jobs' terminal events, read from the ``cc`` sync space with ``XREAD BLOCK`` by a thread of
the bench.  Every job must end ``done`` with no failed item; the others are reported.

The baseline, in the same run: two ``celery -A bench.noop_app worker`` processes with the
same options (prefork, concurrency 2, ``-E``, INFO logging; :mod:`bench.noop_app` has the
product's late acks, prefetch 1, no results), draining ``--jobs`` no-op tasks sent at once
(one kombu publish batch, as ``worker.app.enqueue_many`` sends); the clock runs from the
send to the last ``task-succeeded`` event.  It runs before the product's processes start and
again after they stopped; the ratio is taken to the mean of the two.

Where a small job's time goes, measured over each timed window:

* Redis commands per job, per command: ``MONITOR`` through ``redis-cli`` (filtered to the
  run's Redis database by ``grep``), because ``INFO commandstats`` counts every client of a
  shared server; commands run inside Lua scripts are counted apart.  Each command is put
  down to the web, the workers or the bench by its client's port (the processes' sockets,
  sampled every 0.25 s; a connection opened and closed between samples counts as
  ``unmapped``).  The bench's own reader of the ``cc`` space is left out.
* PostgreSQL transactions per job: ``xact_commit + xact_rollback`` of the database in
  ``pg_stat_database``, read from another database after a settle of
  ``--pg-settle`` seconds (backends report their counts when idle, within 10 s).
* CPU seconds per job: ``utime + stime`` of the web's and the workers' process trees
  (:func:`bench.loadgen.tree_cpu_seconds`), of the PostgreSQL backends serving the database,
  of the bench itself (client and reader), and of ``redis-server`` (``INFO cpu``: the whole
  server, other clients included).

Usage::

    .venv/bin/python bench/small_jobs.py                                   # SQLite
    .venv/bin/python bench/small_jobs.py --database-url postgresql://postgres@127.0.0.1:5432/bench_small

(``--jobs`` 1000, ``--clients`` 16, ``--kinds`` all three, ``--redis-url``
``redis://127.0.0.1:6379/6``.)  A PostgreSQL database is emptied first (its ``public``
schema is dropped): use a scratch database.  The per-user rate limit (``RATE_LIMIT``,
6,000 requests a minute) bounds ``--jobs`` × kinds.  Output: a markdown table, then one
JSON line; ``--out FILE`` also writes the JSON there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.catalogue_run import stop, tail, web  # noqa: E402
from bench.common import (  # noqa: E402
    BIN,
    ROOT,
    cleanup_redis,
    free_port,
    isolate,
    percentile,
    reset_postgres,
)
from bench.loadgen import tree_cpu_seconds  # noqa: E402

KINDS = {"unicat-delete": "bulk_delete_records", "dato-restore": "restore_record_version",
         "plone-revert": "revert_record_version"}
WORKERS = 2
CONCURRENCY = 2
WARM_UP = 16  # jobs of each kind before its timed run (and tasks before the baseline's)
TICK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[small_jobs {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


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


# -- the bench ------------------------------------------------------------------------------


def engine_version() -> str:
    """The commit measured, ``+`` when the product's files differ from it; in an export of a
    commit (``git archive``, no ``.git``) the hash in its ``.commit`` file."""
    if not (ROOT / ".git").exists() and (ROOT / ".commit").exists():
        return (ROOT / ".commit").read_text().strip()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                          capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "api", "worker", "models",
                            "bulkjobs", "stream", "cli"], cwd=ROOT).returncode != 0
    return head + ("+" if dirty else "")


def seed_project(jobs: int, kinds: list[str]) -> dict[str, Any]:
    """One project with enough live leaves for ``kinds`` × (``jobs`` + warm-up) jobs: per
    kind a list of (gid, id of its version 0)."""
    from sqlalchemy import text

    from models.engine import get_write_engine, migrate
    from models.seed import seed

    migrate()
    need = len(kinds) * (jobs + WARM_UP)
    records = 101 + 100 * (need // 90 + 1)
    with get_write_engine().begin() as conn:
        project = seed(conn, records=records, projects=1, seed_value=1,
                       deleted_every=0).projects[0]
    with get_write_engine().connect() as conn:
        leaves = [(r[0], r[1]) for r in conn.execute(text(
            "SELECT r.gid, v.id FROM record r JOIN record_version v ON v.record_id = r.id "
            "AND v.number = 0 WHERE r.project_gid = :p AND r.is_link = false AND NOT EXISTS "
            "(SELECT 1 FROM record c WHERE c.parent_id = r.id) ORDER BY r.id"),
            {"p": project.gid})]
    if len(leaves) < need:
        raise RuntimeError(f"{len(leaves)} leaves, {need} needed")
    per = jobs + WARM_UP
    return {"gid": project.gid, "api_key": project.api_key, "records": project.records,
            "targets": {k: leaves[i * per:(i + 1) * per] for i, k in enumerate(kinds)}}


def requests_for(kind: str, port: int, project: str, jwt: str,
                 targets: list[tuple[str, str]]) -> list[bytes]:
    auth = {"Authorization": f"Bearer {jwt}"}
    if kind == "unicat-delete":
        return [http_request("POST", port, f"/api/p/{project}/records/bulk/delete",
                             {"selection": [gid]}, auth) for gid, _ in targets]
    if kind == "dato-restore":
        return [http_request("POST", port, f"/dato/p/{project}/versions/{vid}/restore", None,
                             auth) for _, vid in targets]
    return [http_request("PATCH", port, f"/plone/p/{project}/{gid}/@history", {"version": 0},
                         auth) for gid, _ in targets]


def job_rows(job: str, since: float) -> list[Any]:
    """The job rows of ``job`` created since ``since`` (epoch seconds)."""
    from sqlalchemy import text

    from models.engine import get_engine

    with get_engine().connect() as conn:
        return list(conn.execute(text(
            "SELECT created_on, started_on, finished_on, attempts FROM job "
            "WHERE job = :j AND created_on >= :s"), {"j": job, "s": since}))


def timings(rows: list[Any], seconds: float) -> dict[str, Any]:
    """From the job rows: queued → started and started → finished (p50, mean), claims per
    job, and how busy the pool processes were (their jobs' run time over the window)."""
    waits = [(r.started_on - r.created_on) * 1000 for r in rows if r.started_on]
    runs = [(r.finished_on - r.started_on) * 1000 for r in rows
            if r.started_on and r.finished_on]
    n = max(len(rows), 1)
    return {
        "job_wait_ms_p50": round(percentile(waits, 50), 1),
        "job_run_ms_p50": round(percentile(runs, 50), 1),
        "job_run_ms_mean": round(sum(runs) / max(len(runs), 1), 1),
        "attempts_per_job": round(sum(r.attempts for r in rows) / n, 2),
        "pool_busy": round(sum(runs) / 1000 / (WORKERS * CONCURRENCY * seconds), 2)
        if seconds else None,
    }


def login(port: int, project: str, api_key: str) -> str:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", f"/api/p/{project}/auth", json.dumps({"api_key": api_key}),
                 {"Content-Type": "application/json"})
    answer = conn.getresponse()
    answer.read()
    jwt = answer.getheader("authorization")
    conn.close()
    if answer.status != 200 or not jwt:
        raise RuntimeError(f"auth failed: {answer.status}")
    return jwt


class Bench:
    def __init__(self, args: argparse.Namespace, data: Path) -> None:
        self.args, self.data = args, data
        self.url = os.environ["REDIS_URL"]
        self.clients = {k: args.clients for k in KINDS}
        for item in args.kind_clients:
            kind, _, n = item.partition("=")
            if kind not in KINDS or not n.isdigit():
                raise SystemExit(f"--kind-clients {item}: KIND=N, KIND one of {list(KINDS)}")
            self.clients[kind] = int(n)
        self.pg = None
        self.dbname = ""
        if args.database_url:
            from sqlalchemy import create_engine

            from models.engine import normalise_url

            parts = urlsplit(args.database_url)
            self.dbname = parts.path.lstrip("/")
            self.pg = create_engine(normalise_url(urlunsplit(parts._replace(path="/postgres"))),
                                    isolation_level="AUTOCOMMIT")

    def window(self, name: str, groups: dict[str, list[int]], skip: set[str] | None = None
               ) -> Window:
        return Window(self.url, groups, self.pg, self.dbname, self.data, name, skip or set())

    # -- raw Celery ----------------------------------------------------------------------

    def baseline(self, label: str) -> dict[str, Any]:
        from celery.events import EventReceiver

        from bench import noop_app

        n = self.args.jobs
        argv = [str(BIN / "celery"), "-A", "bench.noop_app", "worker", "-E", "--loglevel",
                "INFO", "--concurrency", str(CONCURRENCY),
                "--prefetch-multiplier", str(self.args.prefetch)]
        succeeded: dict[str, float] = {}
        lock = threading.Lock()

        def on_event(event: dict[str, Any]) -> None:
            if event.get("type") == "task-succeeded":
                with lock:
                    succeeded[event["uuid"]] = time.perf_counter()

        def send(ids: list[str]) -> None:
            with noop_app.app.producer_or_acquire() as producer, producer.batch():
                for task_id in ids:
                    noop_app.app.send_task(noop_app.TASK, args=[task_id], task_id=task_id,
                                           queue=noop_app.QUEUE, producer=producer)

        def wait(ids: list[str], timeout: float = 300) -> float:
            deadline = time.monotonic() + timeout
            while True:
                with lock:
                    got = [succeeded[i] for i in ids if i in succeeded]
                if len(got) == len(ids):
                    return max(got)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(got)} of {len(ids)} no-op tasks ended")
                time.sleep(0.005)

        with celery_workers(argv, "noop", self.data, {}) as procs, \
                noop_app.app.connection_for_read() as conn:
            receiver = EventReceiver(conn, handlers={"*": on_event}, app=noop_app.app)
            thread = threading.Thread(target=lambda: receiver.capture(limit=None, timeout=None,
                                                                      wakeup=False),
                                      daemon=True)
            thread.start()
            time.sleep(1.0)  # subscribed
            warm = [uuid.uuid4().hex for _ in range(WARM_UP)]
            send(warm)
            wait(warm)
            time.sleep(1.0)
            ids = [uuid.uuid4().hex for _ in range(n)]
            with self.window(f"celery-{label}", {"workers": [p.pid for p in procs]}) as w:
                start = time.perf_counter()
                send(ids)
                end = wait(ids)
                w.stop_clock()
            receiver.should_stop = True
            thread.join(5)
            seconds = end - start
            result = {"kind": "raw-celery", "run": label, "tasks": n,
                      "seconds": round(seconds, 3), "per_s": round(n / seconds, 1),
                      **w.report(n, self.args.pg_settle)}
        log(json.dumps(result))
        return result

    # -- the product -----------------------------------------------------------------------

    def product(self, seeded: dict[str, Any]) -> list[dict[str, Any]]:
        port = free_port()
        worker_argv = [str(BIN / "python"), "-m", "worker", "-E", "--loglevel", "INFO",
                       "--concurrency", str(CONCURRENCY),
                       "--prefetch-multiplier", str(self.args.prefetch)]
        runs = []
        with web({}, self.data, port) as web_proc, \
                celery_workers(worker_argv, "worker", self.data, {}) as workers:
            jwt = login(port, seeded["gid"], seeded["api_key"])
            terminals = Terminals(self.url, self.stream)
            groups = {"web": [web_proc.pid], "workers": [w.pid for w in workers]}
            if self.pg is not None:  # what the idle processes commit
                w = self.window("idle", groups)
                x0 = w.xacts() or 0
                time.sleep(self.args.pg_settle)
                self.idle_xacts_per_s = round(((w.xacts() or 0) - x0) / self.args.pg_settle, 2)
            try:
                for kind in self.args.kinds:
                    targets = seeded["targets"][kind]
                    warm = requests_for(kind, port, seeded["gid"], jwt, targets[:WARM_UP])
                    requests = requests_for(kind, port, seeded["gid"], jwt, targets[WARM_UP:])
                    runs.append(self.kind(kind, port, warm, requests, terminals, groups))
            finally:
                terminals.close()
        return runs

    def kind(self, kind: str, port: int, warm: list[bytes], requests: list[bytes],
             terminals: Terminals, groups: dict[str, list[int]]) -> dict[str, Any]:
        job = KINDS[kind]
        args = self.args
        clients = self.clients[kind]
        since = time.time()
        sent = asyncio.run(send_all(port, warm, clients))
        terminals.wait(job, since - 1, sent.statuses[200] + sent.statuses[202], 120)
        time.sleep(args.pg_settle if self.pg is not None else 2.0)
        with self.window(kind, groups, {terminals.addr}) as w:
            sent = asyncio.run(send_all(port, requests, clients))
            accepted = sent.statuses[200] + sent.statuses[202]
            ends = terminals.wait(job, sent.start_wall - 0.05, accepted, args.job_timeout)
            ends = {t: e for t, e in ends.items() if e["created_on"] >= sent.start_wall - 0.05}
            end = max((e["at"] for e in ends.values()), default=time.perf_counter())
            end = max(end, sent.answered)
            time.sleep(0.2)  # the last acks
            w.stop_clock()
        seconds = end - sent.start
        cost = w.report(len(ends) or 1, args.pg_settle)  # before any query of the bench's
        rows = job_rows(job, sent.start_wall - 0.05)
        not_done = [e for e in ends.values() if e["status"] != "done" or e["failed"]]
        run: dict[str, Any] = {
            "kind": kind, "job": job, "requests": len(requests), "clients": clients,
            "statuses": {str(k): v for k, v in sorted(sent.statuses.items())},
            "jobs": len(ends), "seconds": round(seconds, 3),
            "per_s": round(len(ends) / seconds, 1) if seconds else None,
            "requests_s": round(sent.answered - sent.start, 3),
            "request_ms_p50": round(percentile(sent.latencies, 50), 2),
            "request_ms_p99": round(percentile(sent.latencies, 99), 2),
            "not_done": len(not_done) + max(0, accepted - len(ends)),
            **timings(rows, seconds),
            **cost,
        }
        if not_done:
            run["not_done_sample"] = not_done[:3]
        if sent.errors:
            run["errors_sample"] = sent.errors
        log(json.dumps(run))
        return run

    def run(self) -> dict[str, Any]:
        from bulkjobs import keys

        args = self.args
        self.stream = keys.sync_stream(keys.CC_SPACE)
        report: dict[str, Any] = {
            "bench": "small_jobs", "database": "postgresql" if self.pg is not None else "sqlite",
            "commit": engine_version(), "jobs": args.jobs, "clients": args.clients,
            "workers": WORKERS, "concurrency": CONCURRENCY, "prefetch": args.prefetch,
            "load_start": os.getloadavg(),
        }
        log(f"seeding ({report['database']}) in {self.data}")
        seeded = seed_project(args.jobs, args.kinds)
        report["records"] = seeded["records"]
        report["baseline"] = [self.baseline("before")]
        report["runs"] = self.product(seeded)
        if self.pg is not None:
            report["pg_idle_xacts_per_s"] = self.idle_xacts_per_s
        report["baseline"].append(self.baseline("after"))
        report["load_end"] = os.getloadavg()
        rate = sum(b["per_s"] for b in report["baseline"]) / len(report["baseline"])
        report["baseline_per_s"] = round(rate, 1)
        for run in report["runs"]:
            run["ratio"] = round(run["per_s"] / rate, 3) if run["per_s"] else None
        return report


def markdown(report: dict[str, Any]) -> str:
    pg = report["database"] == "postgresql"
    head = ("| database | kind | jobs/s | ratio to raw Celery | request p50 / p99 ms | "
            "not done | Redis commands / job (+ in Lua) | "
            + ("PG xacts / job | " if pg else "")
            + "CPU ms / job: web, workers" + (", postgres" if pg else "") + ", redis |")
    cols = head.count("|") - 1
    lines = [head, "|" + "---|" * cols]
    for run in [*report["runs"], *report["baseline"]]:
        cpu = run["cpu_ms_per_job"]
        parts = [f"{cpu.get('web', 0):.2f}" if "web" in cpu else "–",
                 f"{cpu['workers']:.2f}"]
        if pg:
            parts.append(f"{cpu.get('postgres', 0):.2f}")
        parts.append(f"{run['redis_server_cpu_ms_per_job']:.2f}")
        baseline = run["kind"] == "raw-celery"
        name = (f"raw Celery no-op ({run['run']})" if baseline
                else f"{run['kind']} ({run['clients']} clients)")
        row = [report["database"], name, f"{run['per_s']:,.1f}",
               "1" if baseline else f"{run['ratio']:.3f}",
               "–" if baseline else f"{run['request_ms_p50']:.1f} / {run['request_ms_p99']:.1f}",
               "–" if baseline else str(run["not_done"]),
               f"{run['redis_commands_per_job']:.1f} (+{run['redis_lua_commands_per_job']:.1f})"]
        if pg:
            row.append("–" if baseline else f"{run.get('pg_xacts_per_job', float('nan')):.2f}")
            if baseline:
                parts[2] = "–"
        row.append(", ".join(parts))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--kinds", nargs="+", choices=list(KINDS), default=list(KINDS))
    ap.add_argument("--kind-clients", nargs="*", default=[], metavar="KIND=N",
                    help="another number of clients for a kind")
    ap.add_argument("--database-url", default="", help="PostgreSQL (default: SQLite)")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/6")
    ap.add_argument("--job-timeout", type=float, default=600)
    ap.add_argument("--pg-settle", type=float, default=11.0,
                    help="seconds before reading PostgreSQL's transaction counts")
    ap.add_argument("--prefetch", type=int, default=1,
                    help="the workers' --prefetch-multiplier, product and baseline alike "
                         "(the product's is 1)")
    ap.add_argument("--out", default="", help="also write the JSON report to this file")
    args = ap.parse_args()
    os.environ["REDIS_URL"] = args.redis_url
    os.environ["PYTHONPATH"] = str(ROOT)  # the processes run this tree's code
    data = isolate(args.database_url or None)
    if args.database_url:
        reset_postgres(args.database_url)
    try:
        report = Bench(args, data).run()
    finally:
        cleanup_redis()
        from bench.catalogue import _cleanup_redis

        _cleanup_redis(os.environ["REDIS_PREFIX"])
    table = markdown(report)
    print(table)
    print(json.dumps(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
