"""Selection resolution benchmark (SPEC §11 P3), each figure beside a raw-SQL baseline.

    .venv/bin/python bench/selection.py [--records 1000000] [--database-url URL] [--repeat 5]

Seeds ``--records`` records (one project) into a fresh database — a temporary SQLite file by
default; with ``--database-url`` that database's schema is DROPPED first — and measures,
``--repeat`` times each, the median wall time of:

* **search**: resolving ``[{"search": {"language": "en", "q": "lighthouse"}}]`` (live records)
  into ``job_item`` — the seeder puts "lighthouse" in every ninth record's body, so about
  100,000 live records of a million match.  Baseline: the plainest SQL that selects the same
  ids — one full-text match joined to ``record`` for project and status, into a temporary
  table, no ranking;
* **children**: resolving ``[{"children": head} for head in heads]`` (one entry per subtree
  head: 10,000 at a million records).  Baseline: one join on ``parent_id`` over all heads.

Each run commits, like the worker does; the rows are removed between runs (not timed).
Besides wall time, SQLite runs report the process's CPU time (SQLite works inside this
process), which stays meaningful on a machine shared with other work.  Prints a table and
one JSON line.  Results are recorded in ``BENCHMARKS.md``.  The temporary SQLite database is
removed at the end unless ``--keep`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import isolate, reset_postgres  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--database-url", default=None,
                        help="a PostgreSQL database to wipe and use (default: a temporary "
                             "SQLite file)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the temporary database")
    args = parser.parse_args()
    data_dir = isolate(args.database_url)
    if args.database_url:
        reset_postgres(args.database_url)
    try:
        run(args.records, args.repeat)
    finally:
        if args.keep:
            print(f"kept {data_dir}", file=sys.stderr)
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


def run(records: int, repeat: int) -> None:
    # Imported here: settings are read once, after DATABASE_URL is set above.
    from sqlalchemy import text

    from models.engine import get_engine, get_write_engine, migrate
    from models.resolve import resolve_into
    from models.seed import seed
    from models.selection import parse_selection

    engine = get_engine()
    migrate(engine)
    started = time.perf_counter()
    with get_write_engine().begin() as conn:
        project = seed(conn, records=records, projects=1, seed_value=42).projects[0]
    seed_s = time.perf_counter() - started
    pg = engine.dialect.name == "postgresql"
    live = "NOT EXISTS (SELECT 1 FROM record_deletion d WHERE d.record_id = r.id)"

    def ours(selection: object) -> Callable[[str], int]:
        parsed = parse_selection(selection)

        def go(token: str) -> int:
            with get_write_engine().begin() as conn:
                return resolve_into(conn, token=token, project_gid=project.gid,
                                    selection=parsed, mode="live")
        return go

    def raw(sql: str, params: dict[str, object]) -> Callable[[str], int]:
        def go(token: str) -> int:
            with get_write_engine().begin() as conn:
                conn.execute(text("DROP TABLE IF EXISTS bench_ids"))
                conn.execute(text(f"CREATE TEMP TABLE bench_ids AS {sql}"),
                             {**params, "proj": project.gid})
                return int(conn.execute(text("SELECT COUNT(*) FROM bench_ids")).scalar_one())
        return go

    if pg:
        search_sql = (
            "SELECT r.id FROM record_search s JOIN record r ON r.id = s.record_id "
            "WHERE s.lang = 'en' AND (s.title @@ to_tsquery('simple', 'lighthouse:*') "
            "OR s.body @@ to_tsquery('simple', 'lighthouse:*')) "
            f"AND r.project_gid = :proj AND {live}"
        )
        heads_rows = "jsonb_array_elements_text(CAST(:heads AS jsonb)) AS h(value)"
    else:
        search_sql = (
            "SELECT r.id FROM record_fts f JOIN record r ON r.id = f.rowid >> 10 "
            "WHERE record_fts MATCH 'lighthouse*' AND (f.rowid & 1023) = "
            "(SELECT slot FROM search_language WHERE code = 'en') "
            f"AND r.project_gid = :proj AND {live}"
        )
        heads_rows = "json_each(:heads) AS h"
    # CROSS JOIN fixes SQLite's join order (heads, then their rows by gid, then children by
    # parent_id); left to itself, with no statistics, it scans the project's records first.
    join = "JOIN" if pg else "CROSS JOIN"
    children_sql = (
        f"SELECT r.id FROM {heads_rows} {join} record p ON p.gid = h.value "
        f"{join} record r ON r.parent_id = p.id WHERE p.project_gid = :proj AND {live}"
    )
    cases = {
        "search": (ours([{"search": {"language": "en", "q": "lighthouse"}}]),
                   raw(search_sql, {})),
        "children": (ours([{"children": head} for head in project.heads]),
                     raw(children_sql, {"heads": json.dumps(project.heads)})),
    }
    results: dict[str, dict[str, float]] = {}
    for name, (our_fn, raw_fn) in cases.items():
        times: dict[str, list[float]] = {"ours": [], "raw": [], "ours_cpu": [], "raw_cpu": []}
        counts = set()
        for _ in range(repeat):
            for fn, key in ((our_fn, "ours"), (raw_fn, "raw")):
                token = str(uuid.uuid4())
                t0, c0 = time.perf_counter(), time.process_time()
                counts.add(fn(token))
                times[key].append(time.perf_counter() - t0)
                times[key + "_cpu"].append(time.process_time() - c0)
                with get_write_engine().begin() as conn:
                    conn.execute(text("DELETE FROM job_item WHERE job_token = :t"), {"t": token})
        if len(counts) != 1:
            raise SystemExit(f"{name}: ours and the baseline found different counts: {counts}")
        med = {k: statistics.median(v) for k, v in times.items()}
        results[name] = {"items": counts.pop(), "ours_s": round(med["ours"], 4),
                         "baseline_s": round(med["raw"], 4),
                         "ratio": round(med["ours"] / med["raw"], 2)}
        if not pg:
            results[name].update(ours_cpu_s=round(med["ours_cpu"], 4),
                                 baseline_cpu_s=round(med["raw_cpu"], 4),
                                 cpu_ratio=round(med["ours_cpu"] / med["raw_cpu"], 2))
    db = "postgresql" if pg else "sqlite"
    load = os.getloadavg()[0]
    print(f"\nselection bench — {db}, {records:,} records, seeded in {seed_s:.1f} s, "
          f"median of {repeat}, {os.cpu_count()} CPUs, load average {load:.1f}")
    print(f"{'case':<10}{'items':>10}{'ours (s)':>10}{'baseline (s)':>14}{'ratio':>7}"
          f"{'ours cpu':>10}{'base cpu':>10}{'ratio':>7}")
    for name, r in results.items():
        cpu = (f"{r['ours_cpu_s']:>10.3f}{r['baseline_cpu_s']:>10.3f}{r['cpu_ratio']:>7.2f}"
               if not pg else f"{'-':>10}{'-':>10}{'-':>7}")
        print(f"{name:<10}{r['items']:>10,}{r['ours_s']:>10.3f}{r['baseline_s']:>14.3f}"
              f"{r['ratio']:>7.2f}{cpu}")
    print(json.dumps({"bench": "selection", "database": db, "records": records,
                      "repeat": repeat, "seed_s": round(seed_s, 1), "load": round(load, 1),
                      **results}))


if __name__ == "__main__":
    main()
