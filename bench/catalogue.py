"""P9–P12: the whole job catalogue at scale, each job beside a raw set-based SQL baseline.

Data (one seeding subprocess, whose peak RSS is reported): one project of ``--records``
records (default 1,000,000) as ``--records / 100`` subtrees of 100 under the root, all
live (``seed(deleted_every=0)``), with one link per 100 subtrees, and the search marker
word in every record's text (``seed(marker_every=1)``: every record but the root, which
has no text); a second small project for the submit probe; 10,000 schema fields
(``--schema-items``) written with bulk inserts, with or without a working copy each.

Scenarios (``--only`` takes these names), in this order, each on the state the previous
one left (checked, and put right by raw SQL when it is not what the scenario starts from):

==================  ==============================  =====================================
name                job × selection                 raw baseline (same run, committed)
==================  ==============================  =====================================
delete-children     bulk delete, ``[{"children":    deletion rows of the heads' subtrees
                    root}]`` (the heads, links)     (mpath ranges), the links into them,
                                                    a workflow entry per head
undelete-gids       bulk undelete, the heads' gids  ``DELETE`` of the heads' generations,
                                                    a workflow entry per head
delete-gids         bulk delete, the heads' gids    as delete-children
undelete-children   bulk undelete, children of root as undelete-gids
restore             1,000 DatoCMS restores queued   version 0 → content, a new current
                    at once (one record each)       version, reindex, for 1,000 records
revert              1,000 Plone reverts             the same
delete-search       bulk delete, one search that    deletion rows of every record the
                    matches every record: each      full-text index finds (head's
                    record its own item             generation), a workflow entry each
permanent-delete    bulk permanent delete, the      tombstones, childcount, versions,
                    heads' gids                     workflow, deletion, search and record
                                                    rows of the subtrees and links
schema-commit       commit, 10,000 field gids       originals take the copies; copies go
schema-revert       revert, the same                copies deleted
schema-save-as-new  save as new, the same           copies become new items
schema-copy         copy, 10,000 committed fields   ``INSERT … SELECT`` of the copies
==================  ==============================  =====================================

Each timed run: a fresh ``celery -A worker.app worker`` (``--concurrency`` 1 by default)
with ``RECORD_EVENTS`` on or off and default settings otherwise; the clock runs from
``worker.submit.submit_many`` (job rows, ``queued`` events, Celery messages) to the last
terminal event read from the sync log; ``--job-timeout`` seconds at most (the job is then
cancelled and reported as a timeout).  Meanwhile the probe submits one-gid deletes to the
other project through a real uvicorn web process (``--probe-rate`` per second; see
:mod:`bench.catalogue_run`).  Between timed runs the database is checkpointed (SQLite) or
vacuumed and analysed (PostgreSQL).  The permanent delete's state is put back from backup
tables written after seeding.

The children selections also hold the root's links (one per 100 subtrees): a link is
deleted with its target's subtree, so in an undelete of the root's children it fails per
item ("deleted with an ancestor" when it shares a batch with its target's head, "not
deleted" when that head's batch came first); the records counted are those the job changed
(deletion rows written or removed, records removed), measured in the database after it.

Output: a markdown table (stdout), then one JSON line; ``--out DIR`` also writes both
there (and the runs so far after each run, ``….partial.json``).  Usage::

    .venv/bin/python -m bench.catalogue --records 100000 --events both
    .venv/bin/python -m bench.catalogue --database-url postgresql://postgres@127.0.0.1:5432/bench_catalogue

A PostgreSQL database is emptied first (its ``public`` schema is dropped): use a scratch
database.  Redis keys live under a prefix of their own and are removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.catalogue_report import RSS_LIMIT, markdown, verdict  # noqa: E402
from bench.catalogue_run import (  # noqa: E402
    Probe,
    children,
    hwm_mib,
    log,
    tail,
    wait_terminal,
    web,
    worker,
)

SUBTREE = 100
SCRATCH = Path("/work/scratch/catalogue")


@dataclass(frozen=True)
class Scenario:
    name: str
    job: str
    selection: str  # label for the table
    kind: str  # heads | per_record | versions | schema
    pre: str | None = None  # tree state it starts from: live | deleted


SCENARIOS = [
    Scenario("delete-children", "bulk_delete_records", "children of root", "heads", "live"),
    Scenario("undelete-gids", "bulk_undelete_records", "{heads} head gids", "heads", "deleted"),
    Scenario("delete-gids", "bulk_delete_records", "{heads} head gids", "heads", "live"),
    Scenario("undelete-children", "bulk_undelete_records", "children of root", "heads",
             "deleted"),
    Scenario("restore", "restore_record_version", "1 gid per job", "versions", "live"),
    Scenario("revert", "revert_record_version", "1 gid per job", "versions", "live"),
    Scenario("delete-search", "bulk_delete_records", "search: every record", "per_record",
             "live"),
    Scenario("permanent-delete", "bulk_permanent_delete_records", "{heads} head gids",
             "per_record", "deleted"),
    Scenario("schema-commit", "bulk_commit_schema_items", "{schema} field gids", "schema"),
    Scenario("schema-revert", "bulk_revert_schema_items", "{schema} field gids", "schema"),
    Scenario("schema-save-as-new", "bulk_save_as_new_schema_items", "{schema} field gids",
             "schema"),
    Scenario("schema-copy", "bulk_copy_schema_items", "{schema} field gids", "schema"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--database-url", default="", help="default: SQLite in the work dir")
    ap.add_argument("--redis-url", default=os.environ.get("REDIS_URL",
                                                          "redis://127.0.0.1:6379/0"))
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--events", choices=("on", "off", "both"), default="on",
                    help="RECORD_EVENTS of the worker")
    ap.add_argument("--only", nargs="+", metavar="SCENARIO",
                    choices=[s.name for s in SCENARIOS])
    ap.add_argument("--repeat", type=int, default=1, help="timed runs per scenario")
    ap.add_argument("--job-timeout", type=float, default=600)
    ap.add_argument("--concurrency", type=int, default=1, help="worker pool processes")
    ap.add_argument("--schema-items", type=int, default=10_000)
    ap.add_argument("--version-jobs", type=int, default=1000)
    ap.add_argument("--probe-rate", type=float, default=20, help="submits/s (0: no probe)")
    ap.add_argument("--probe-queue", choices=("separate", "shared"), default="separate",
                    help="separate: the probe's jobs are not run by the measured worker")
    ap.add_argument("--workdir", default="", help=f"default: a new dir under {SCRATCH}")
    ap.add_argument("--out", default="", help="also write catalogue.json and .md here")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (SQLite file)")
    ap.add_argument("--seed-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.seed_only:
        _seed_child(args)
        return
    base = Path(args.workdir) if args.workdir else None
    if base is None:
        SCRATCH.mkdir(parents=True, exist_ok=True)
        base = Path(tempfile.mkdtemp(prefix="run-", dir=SCRATCH))
    base.mkdir(parents=True, exist_ok=True)
    env = {
        "DATA_DIR": str(base), "DATABASE_URL": args.database_url or f"sqlite:///{base}/bench.db",
        "REDIS_URL": args.redis_url, "BROKER_URL": args.redis_url,
        "REDIS_PREFIX": f"bjcat{uuid.uuid4().hex[:8]}", "JWT_SECRET": uuid.uuid4().hex,
        "LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    try:
        report = Bench(args, env, base).run()
    finally:
        _cleanup_redis(env["REDIS_PREFIX"])
        if not args.keep and not args.workdir:
            shutil.rmtree(base, ignore_errors=True)
    table = markdown(report)
    print(table)
    print(json.dumps(report))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        stem = f"catalogue-{report['database']}-{report['records']}-{time.strftime('%H%M%S')}"
        (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / f"{stem}.md").write_text(table + "\n")


def _engine_version() -> str:
    """The commit the worker runs, ``+`` when the engine's files differ from it: the code is
    read when each worker starts."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, check=True,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "models", "worker",
                                "bulkjobs", "api"], cwd=root).returncode != 0
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+" if dirty else "")


def _cleanup_redis(prefix: str) -> None:
    from bulkjobs.connections import get_redis

    r = get_redis()
    for pattern in (f"{prefix}*", f"_kombu*{prefix}*"):
        stale = list(r.scan_iter(match=pattern, count=1000))
        for i in range(0, len(stale), 1000):
            r.delete(*stale[i:i + 1000])


# --- seeding (a process of its own, for its peak RSS) ------------------------------------


def _seed_child(args: argparse.Namespace) -> None:
    from models.engine import get_write_engine
    from models.seed import seed

    subtrees = max(1, args.records // SUBTREE)
    # The seeder budgets one link per 10,000 records; with these many the tree is exactly
    # the root, the subtrees and the links.
    records = subtrees * SUBTREE + 1 + subtrees // 100
    start = time.perf_counter()
    with get_write_engine().begin() as conn:
        main = seed(conn, records=records, projects=1, seed_value=1, deleted_every=0,
                    marker_every=1).projects[0]
    seconds = time.perf_counter() - start
    rss = hwm_mib(os.getpid())
    with get_write_engine().begin() as conn:
        probe = seed(conn, records=1001, projects=1, seed_value=2).projects[0]
    print(json.dumps({"project": main.gid, "root": main.root, "records": main.records,
                      "seconds": round(seconds, 1), "rss_mib": rss,
                      "probe": {"gid": probe.gid, "api_key": probe.api_key,
                                "gids": probe.heads}}))


# --- the bench ------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, env: dict[str, str], workdir: Path) -> None:
        self.args, self.env, self.workdir = args, env, workdir

    def run(self) -> dict[str, Any]:
        from sqlalchemy import text

        from bench.catalogue_sql import Schema, Tree
        from bulkjobs.connections import get_synclog
        from models.engine import get_engine, get_write_engine, migrate

        args = self.args
        self.engine = get_engine()
        self.db = self.engine.dialect.name
        if self.db == "postgresql":
            with self.engine.begin() as conn:
                conn.execute(text("DROP SCHEMA public CASCADE"))
                conn.execute(text("CREATE SCHEMA public"))
        migrate(self.engine)
        log(f"seeding {args.records:,} records ({self.db}) in {self.workdir}")
        out = subprocess.run([sys.executable, "-m", "bench.catalogue", "--seed-only",
                              "--records", str(args.records)], env=os.environ.copy(),
                             check=True, capture_output=True, text=True).stdout
        self.seeded = json.loads(out.strip().splitlines()[-1])
        log(f"seeded {self.seeded['records']:,} records in {self.seeded['seconds']} s, "
            f"seeder peak RSS {self.seeded['rss_mib']} MiB")
        self.write = get_write_engine()
        self.tree = Tree.load(self.write, self.seeded["project"])
        start = time.perf_counter()
        self.tree.backup()
        log(f"backup tables written in {time.perf_counter() - start:.1f} s")
        self.schema = Schema(self.write, self.seeded["project"], args.schema_items)
        self.synclog = get_synclog()
        self.versions = self.tree.version_targets(4 * args.version_jobs)
        report: dict[str, Any] = {
            "bench": "catalogue", "database": self.db, "records": self.tree.nonroot,
            "subtrees": len(self.tree.heads), "links": self.tree.links,
            "schema_items": args.schema_items, "version_jobs": args.version_jobs,
            "concurrency": args.concurrency, "job_timeout_s": args.job_timeout,
            "probe_rate": args.probe_rate, "probe_queue": args.probe_queue,
            "load_start": os.getloadavg(),
            "seed": {k: self.seeded[k] for k in ("seconds", "rss_mib", "records")},
            "seed_meets_rss": self.seeded["rss_mib"] <= RSS_LIMIT, "runs": [],
        }
        web_env = dict(self.env)
        if args.probe_queue == "separate":
            web_env["REDIS_PREFIX"] = self.env["REDIS_PREFIX"] + "web"
        from bench.common import free_port

        port = free_port()
        chosen = [s for s in SCENARIOS if not args.only or s.name in args.only]
        settings = {"on": [True], "off": [False], "both": [True, False]}[args.events]
        with web(web_env, self.workdir, port):
            self.probe = (Probe(port, self.seeded["probe"]["gid"], self.seeded["probe"]["api_key"],
                                self.seeded["probe"]["gids"], args.probe_rate)
                          if args.probe_rate > 0 else None)
            if self.probe:  # the same submits with nothing else running, for comparison
                self.probe.start()
                time.sleep(10)
                report["probe_idle"] = self.probe.stop()
                log(f"submit latency, idle: {report['probe_idle']}")
            for events in settings:
                for scenario in chosen:
                    for rep in range(args.repeat):
                        run = self.scenario(scenario, events, rep)
                        report["runs"].append(run)
                        log(json.dumps(run))
                        self._save_partial(report)
        report["load_end"] = os.getloadavg()
        if args.probe_queue == "separate":
            _cleanup_redis(web_env["REDIS_PREFIX"])
        return report

    def _save_partial(self, report: dict[str, Any]) -> None:
        """With ``--out``: the runs so far, in case the whole run does not finish."""
        if self.args.out:
            out = Path(self.args.out)
            out.mkdir(parents=True, exist_ok=True)
            name = f"catalogue-{report['database']}-{report['records']}.partial.json"
            (out / name).write_text(json.dumps(report, indent=2) + "\n")

    # -- one scenario ----------------------------------------------------------------------

    def scenario(self, s: Scenario, events: bool, rep: int) -> dict[str, Any]:
        label = s.selection.format(heads=f"{len(self.tree.heads):,}",
                                   schema=f"{self.args.schema_items:,}")
        run: dict[str, Any] = {"scenario": s.name, "job": s.job, "selection": label,
                               "kind": s.kind, "database": self.db,
                               "events": "on" if events else "off", "repeat": rep}
        try:
            raw, job = self._plan(s)
            self._prepare(s)
            raw_s, raw_rows = self._raw(raw)
            run.update(raw_s=round(raw_s, 3), raw_records=raw_rows,
                       raw_per_s=round(raw_rows / raw_s) if raw_s else None)
            submissions, count = job()
            run.update(self._job(s, submissions, events, count))
            if run.get("job_s") and run["status"] == "done":
                run["ratio"] = round(run["job_s"] / raw_s, 2)
        except Exception as exc:  # report it and go on: the next scenario re-checks its state
            log(traceback.format_exc())
            run["status"] = f"error: {type(exc).__name__}: {exc}"[:300]
        run.update(verdict(run))
        return run

    def _prepare(self, s: Scenario) -> None:
        from bench.catalogue_sql import settle

        if s.pre:
            self.tree.ensure(s.pre)
        settle(self.engine)

    def _raw(self, work: Callable[[Any], int]) -> tuple[float, int]:
        from bench.catalogue_sql import timed

        return timed(self.write, work)

    def _plan(self, s: Scenario) -> tuple[Callable[[Any], int], Callable[[], tuple[
            list[tuple[str, dict[str, Any]]], Callable[[], int]]]]:
        """The raw baseline, and a function that sets the job's state up and returns its
        submissions with a function counting the records it changed (called after it)."""
        tree, root_gid = self.tree, self.seeded["root"]
        n = self.args.version_jobs
        if s.kind == "schema":
            verb = s.name.removeprefix("schema-").replace("-", "_")
            copies = verb != "copy"

            def schema_raw(conn: Any) -> int:
                return self.schema.raw(conn, verb)

            self.schema.reset(working_copies=copies)

            def schema_job() -> tuple[list[tuple[str, dict[str, Any]]], Callable[[], int]]:
                gids = self.schema.reset(working_copies=copies)
                self._settle()
                return [(s.job, {"selection": gids})], lambda: -1  # counted from info
            return schema_raw, schema_job
        if s.kind == "versions":
            raw_set, job_set = ((self.versions[:n], self.versions[n:2 * n]) if s.name == "restore"
                                else (self.versions[2 * n:3 * n], self.versions[3 * n:]))
            comment = "Restored version 0" if s.name == "restore" else "Reverted to revision 0"

            def versions_raw(conn: Any) -> int:
                return tree.raw_restore(conn, [t[0] for t in raw_set], comment)

            def versions_job() -> tuple[list[tuple[str, dict[str, Any]]], Callable[[], int]]:
                tree.ensure("live")
                self._settle()
                version = (lambda t: {"version": t[2]}) if s.name == "restore" else (
                    lambda t: {"version": 0})
                return [(s.job, {"selection": [t[1]], **version(t)}) for t in job_set], \
                    lambda: -1
            return versions_raw, versions_job
        selection: list[Any]
        if s.name.endswith("children"):
            selection, source = [{"children": root_gid}], "children"
        elif s.name == "delete-search":
            selection, source = [{"search": {"language": "en", "q": "lighthouse"}}], "search"
        else:
            selection, source = list(tree.head_gids), "gids"
        if s.name.startswith("delete"):
            def raw(conn: Any) -> int:
                if source == "search":
                    return tree.raw_delete_search(conn)
                return tree.raw_delete(conn, source)
        elif s.name.startswith("undelete"):
            def raw(conn: Any) -> int:
                return tree.raw_undelete(conn, source)
        else:
            def raw(conn: Any) -> int:
                return tree.raw_permanent_delete(conn)

        def job() -> tuple[list[tuple[str, dict[str, Any]]], Callable[[], int]]:
            assert s.pre is not None
            tree.ensure(s.pre)
            self._settle()
            before = tree.counts()

            def changed() -> int:
                after = tree.counts()
                if s.name.startswith("delete"):
                    return after["deleted"] - before["deleted"]
                if s.name.startswith("undelete"):
                    return before["deleted"] - after["deleted"]
                return before["records"] - after["records"]
            return [(s.job, {"selection": selection})], changed
        return raw, job

    def _settle(self) -> None:
        from bench.catalogue_sql import settle

        settle(self.engine)

    # -- the job through the real path ---------------------------------------------------------

    def _job(self, s: Scenario, submissions: list[tuple[str, dict[str, Any]]], events: bool,
             count: Callable[[], int]) -> dict[str, Any]:
        from bulkjobs import keys
        from worker.app import enqueue_many
        from worker.submit import Submission, cancel, check, submit_many

        for job, params in submissions:
            check(job, params)
        wanted = [Submission(self.seeded["project"], job, params,
                             {"type": "user", "id": "bench"}) for job, params in submissions]
        env = {**self.env, "RECORD_EVENTS": "true" if events else "false", "LOG_LEVEL": "INFO"}
        out: dict[str, Any] = {"engine": _engine_version()}
        with worker(env, self.workdir, concurrency=self.args.concurrency) as (proc, logfile):
            after = self.synclog.cursor(keys.CC_SPACE)
            if self.probe:
                self.probe.start()
            load = os.getloadavg()[0]
            start = time.perf_counter()
            tokens = submit_many(wanted, log=self.synclog, enqueue=enqueue_many)
            latest: dict[str, dict[str, Any]] = {}
            ends, progress = wait_terminal(self.synclog, tokens, after=after,
                                           timeout=self.args.job_timeout, last=latest)
            seconds = time.perf_counter() - start
            if self.probe:
                out["probe"] = self.probe.stop()
            out["worker_rss_mib"] = max((hwm_mib(c) for c in children(proc.pid)), default=0.0)
            out["load"] = [round(load, 2), round(os.getloadavg()[0], 2)]
            if len(ends) < len(tokens):
                out["worker_log_tail"] = tail(logfile)
                for token in tokens:
                    if token not in ends:
                        cancel(project_gid=self.seeded["project"], token=token, log=self.synclog)
        self._trim()
        statuses = [e["data"]["status"] for e in ends.values()]
        infos = [e["data"].get("info") or {} for e in ends.values()]
        total = sum(int(i.get("total", 0)) for i in infos)
        failed = sum(int(i.get("failed", 0)) for i in infos)
        errors = [e for i in infos for e in i.get("errors", [])][:3]
        out.update(jobs=len(tokens), items_total=total, items_failed=failed,
                   progress_events=progress, job_s=round(seconds, 3))
        if errors:
            out["errors_sample"] = errors
        if len(ends) < len(tokens):
            unfinished = [latest.get(t, {}) for t in tokens if t not in ends]
            done_items = sum(int(i.get("total", 0)) - int(i.get("remaining", 0))
                             for i in unfinished)
            out["status"] = f"timeout after {self.args.job_timeout:.0f} s " \
                            f"({len(ends)}/{len(tokens)} jobs ended)"
            if len(tokens) == 1:
                info = unfinished[0]
                out["status"] += (f": {done_items:,} of {int(info['total']):,} items done"
                                  if "total" in info else ": still resolving its selection")
            return out
        rejected = [e["data"].get("info", {}).get("error") for e in ends.values()
                    if e["data"]["status"] != "done"]
        out["status"] = "done" if not rejected else f"rejected: {rejected[0]}"
        records = count()
        if records < 0:  # schema and version jobs: the items processed
            records = total - failed if s.kind == "schema" else statuses.count("done")
        out["records"] = records
        out["records_per_s"] = round(records / seconds) if seconds else None
        return out

    def _trim(self) -> None:
        """Drop the project's record events (a million per job with events on)."""
        try:
            self.synclog.trim(self.seeded["project"], keep=0, keep_seconds=0)
        except Exception:
            from bulkjobs import keys
            from bulkjobs.connections import get_redis

            get_redis().delete(keys.sync_stream(self.seeded["project"]))


if __name__ == "__main__":
    main()
