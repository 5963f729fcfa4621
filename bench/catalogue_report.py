"""The catalogue bench's targets (SPEC §11: P9–P12) and its markdown table."""

from __future__ import annotations

from typing import Any

#: records/s a job must reach, by (kind, database): P10.
RATE_TARGETS = {
    ("heads", "sqlite"): 300_000, ("heads", "postgresql"): 100_000,
    ("per_record", "sqlite"): 100_000, ("per_record", "postgresql"): 50_000,
}
RATIO_LIMIT = 3.0  # job time / raw time
RSS_LIMIT = 256.0  # MiB, P9
SUBMIT_P50_MS, SUBMIT_P99_MS = 5.0, 50.0  # P12
EVENTS_LIMIT = 2.0  # job time with record events on / off, P11


def verdict(run: dict[str, Any]) -> dict[str, Any]:
    """Whether a run meets its targets, and by how much it misses those it does not."""
    why: list[str] = []
    target = RATE_TARGETS.get((run["kind"], run["database"]))
    if run.get("status") != "done":
        why.append(str(run.get("status")))
    else:
        rate = run.get("records_per_s") or 0
        if target and rate < target:
            short = f"{target / rate:.2f}x" if rate else "entirely"
            why.append(f"rate {short} short of {target:,} rec/s")
        if run.get("ratio") is not None and run["ratio"] > RATIO_LIMIT:
            why.append(f"{run['ratio'] / RATIO_LIMIT:.2f}x over {RATIO_LIMIT:g}x raw")
    if run.get("worker_rss_mib", 0) > RSS_LIMIT:
        why.append(f"worker RSS > {RSS_LIMIT:g} MiB")
    probe = run.get("probe") or {}
    submit_ok = None
    if probe.get("n"):
        submit_ok = probe["p50_ms"] <= SUBMIT_P50_MS and probe["p99_ms"] <= SUBMIT_P99_MS
    return {"target_records_per_s": target, "meets": not why, "why": why,
            "submit_meets": submit_ok}


def events_cost(runs: list[dict[str, Any]]) -> list[tuple[str, str, str, float, float]]:
    """P11: (job, selection, database, job s with record events on, off) for every job run
    both ways on one database."""
    def key(r: dict[str, Any]) -> tuple[str, str, str]:
        return r["job"], r["selection"], r["database"]

    off = {key(r): r for r in runs if r.get("events") == "off" and r.get("status") == "done"}
    return [(*key(r), r["job_s"], off[key(r)]["job_s"]) for r in runs
            if r.get("events") == "on" and r.get("status") == "done" and key(r) in off]


def _db_name(database: str) -> str:
    return {"sqlite": "SQLite", "postgresql": "PostgreSQL"}.get(database, database)


def _n(value: Any, digits: int = 0) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def markdown(report: dict[str, Any]) -> str:
    db = _db_name(report["database"])
    lines = [
        f"### The catalogue: {db}, {report['records']:,} records "
        f"({report['subtrees']:,} subtrees of 100, {report['links']} links), "
        f"{report['schema_items']:,} schema items, {report['version_jobs']:,} version jobs",
        "",
        f"Seeder: {report['seed']['seconds']} s, peak RSS {report['seed']['rss_mib']} MiB "
        f"({'meets' if report['seed_meets_rss'] else 'misses'} ≤ {RSS_LIMIT:g} MiB). "
        f"Load average at start {', '.join(f'{x:.2f}' for x in report['load_start'])}"
        + (f", at end {', '.join(f'{x:.2f}' for x in report['load_end'])}"
           if report.get("load_end") else "") + ".",
        "",
        (f"Submit latency with no job running: p50 {idle['p50_ms']:.1f} ms, p99 "
         f"{idle['p99_ms']:.1f} ms over {idle['n']} submits." if (idle := report.get(
             "probe_idle")) else ""),
        "",
        "| job | selection | db | events | records | job s | records/s | raw s | raw rec/s "
        "| ratio | worker RSS MiB | submit p50 / p99 ms | load | target rec/s | meets |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["runs"]:
        probe = r.get("probe") or {}
        submit = (f"{probe['p50_ms']:.1f} / {probe['p99_ms']:.1f}"
                  + ("" if r.get("submit_meets") else " ✗") if probe.get("n") else "–")
        status = "yes" if r.get("meets") else "no: " + "; ".join(
            " ".join(str(w).split())[:160] for w in r.get("why", []))
        records = r.get("records")
        if r.get("items_failed"):
            status += f" ({r['items_failed']:,} items failed)"
        load = "/".join(f"{x:.1f}" for x in r.get("load", [])) or "–"
        row_db = _db_name(r["database"])
        lines.append(
            f"| {r['job']} | {r['selection']} | {row_db} | {r['events']} | {_n(records)} "
            f"| {_n(r.get('job_s'), 2)} | {_n(r.get('records_per_s'))} | {_n(r.get('raw_s'), 3)} "
            f"| {_n(r.get('raw_per_s'))} | {_n(r.get('ratio'), 2)} "
            f"| {_n(r.get('worker_rss_mib'), 0)} | {submit} | {load} "
            f"| {_n(r.get('target_records_per_s'))} | {status} |")
    pairs = events_cost(report["runs"])
    if pairs:
        lines += ["", "Record events' cost (P11: a job with record events on within "
                  f"{EVENTS_LIMIT:g}x of the same job with them off):", "",
                  "| job | selection | db | job s, events on | job s, events off | on / off "
                  "| meets |",
                  "|---|---|---|---:|---:|---:|---|"]
        for job, selection, database, on_s, off_s in pairs:
            ratio = on_s / off_s if off_s else float("inf")
            meets = ("yes" if ratio <= EVENTS_LIMIT
                     else f"no: {ratio / EVENTS_LIMIT:.2f}x over {EVENTS_LIMIT:g}x")
            lines.append(f"| {job} | {selection} | {_db_name(database)} | {on_s:.2f} | {off_s:.2f} "
                         f"| {ratio:.2f} | {meets} |")
    lines += ["", "Targets: P10 rates (heads ≥ 300,000 rec/s SQLite, ≥ 100,000 PostgreSQL; one "
              "item per record and permanent delete ≥ 100,000 / ≥ 50,000), each job ≤ 3× its "
              "raw baseline, worker peak RSS ≤ 256 MiB (P9); ✗ marks a submit latency over "
              "P12's p50 5 ms / p99 50 ms. Version rows count jobs (one record each), schema "
              "rows items."]
    return "\n".join(lines)


def merged(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One report of several runs' (one per database, say): their rows in one table, each
    job's rows side by side (by events, then job and selection, then database)."""
    first = dict(reports[0])
    order = {(r["job"], r["selection"]): i for i, r in enumerate(first["runs"])}
    runs = [r for report in reports for r in report["runs"]]
    runs.sort(key=lambda r: (r.get("events") != "on", order.get((r["job"], r["selection"]),
                                                                 len(order)), r["database"]))
    first["runs"] = runs
    first["database"] = " and ".join(sorted({r["database"] for r in reports}))
    return first


def main() -> None:
    """``python -m bench.catalogue_report FILE.json…``: the table of saved (or partial)
    catalogue reports; ``--merge`` puts the rows of every file in one table."""
    import json
    import sys

    paths = [a for a in sys.argv[1:] if a != "--merge"]
    reports = []
    for path in paths:
        with open(path) as fh:
            report = json.load(fh)
        for run in report["runs"]:  # the verdicts as this version words them
            run.update(verdict(run))
        reports.append(report)
    if "--merge" in sys.argv[1:] and reports:
        print(markdown(merged(reports)))
        return
    for report in reports:
        print(markdown(report) + "\n")


if __name__ == "__main__":
    main()
