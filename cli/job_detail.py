"""``bulkjobs jobs show``: one job in full, as the dashboard's job detail shows it — its
state, selection and parameters, when it was created, started and finished, how long it has
run and at what rate."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated, Any

import typer
from rich.markup import escape

from cli.common import cell, console_at_least, err, job_project, ready, when
from models.jobs import TERMINAL


def timing(job: dict[str, Any], *, now: float) -> dict[str, Any]:
    """A job detail's (:func:`models.job_detail.detail`) items processed so far, seconds run
    and items a second, as the dashboard reckons them: a run ends when the job finished (a
    finished job without ``finished_on`` at its last update), else it runs until ``now``;
    None where a job has not started or counts no items."""
    info = job.get("info") or {}
    total, remaining = info.get("total"), info.get("remaining")
    processed = (max(0, total - remaining)
                 if isinstance(total, int) and isinstance(remaining, int) else None)
    end = job.get("finished_on") or (job["updated_on"] if job["status"] in TERMINAL else now)
    started = job.get("started_on")
    duration = max(0.0, end - started) if started else None
    rate = processed / duration if duration and processed is not None else None
    return {"processed": processed, "duration": duration, "rate": rate}


def seconds_text(seconds: float) -> str:
    """A duration as the dashboard writes it: ``0.42 s``, ``12 s``, ``3 min 5 s``, ``2 h 4 min``."""
    if seconds < 60:
        return f"{seconds:.{2 if seconds < 1 else 1 if seconds < 10 else 0}f} s"
    minutes, hours = int(seconds // 60), int(seconds // 3600)
    if hours:
        return f"{hours} h {minutes % 60} min"
    return f"{minutes} min {round(seconds % 60)} s"


def show(
    token: Annotated[str, typer.Argument(help="the job token")],
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """One job in full: state, selection, parameters, times, duration and rate (exit 1: no
    such job)."""
    from sqlmodel import Session

    from models.engine import get_engine
    from models.job_detail import detail

    ready()
    project = job_project(token)
    with Session(get_engine()) as session:
        job = detail(session, project, token)
    if job is None:  # removed between the two reads
        err.print(f"[red]no job {escape(token)}")
        raise typer.Exit(1)
    job.update(timing(job, now=time.time()))
    if as_json:
        sys.stdout.write(json.dumps(job) + "\n")
        return
    _print_detail(job)


def _print_detail(job: dict[str, Any]) -> None:
    """The detail as a two-column table: the token whole, long values folded."""
    from rich.table import Table
    from rich.text import Text

    info = job["info"] or {}
    shown, size = len(job["selection"]), job["selection.size"]
    rows: list[tuple[str, object]] = [
        ("token", job["token"]), ("project", job["project_gid"]), ("job", job["job"]),
        ("status", job["status"]), ("error", info.get("error")),
        ("cancelled", bool(info.get("cancelled"))), ("paused", bool(info.get("paused"))),
        ("created", when(job["created_on"])),
        ("started", job["started_on"] and when(job["started_on"])),
        ("finished", job["finished_on"] and when(job["finished_on"])),
        ("duration", None if job["duration"] is None else seconds_text(job["duration"])),
        ("rate", None if job["rate"] is None else f"{job['rate']:,.1f} items/s"),
        ("total", info.get("total")), ("remaining", info.get("remaining")),
        ("processed", job["processed"]), ("failed", info.get("failed")),
        ("selection", json.dumps(job["selection"])),
        ("selection size", f"first {shown} of {size} entries" if size > shown else size),
        ("params", json.dumps(job["params"])),
    ]
    table = Table("field", "value")
    table.columns[0].no_wrap = True
    for name, value in rows:
        table.add_row(name, Text(cell(value), overflow="fold"))
    needed = max(len(name) for name, _ in rows) + len(job["token"]) + 7  # borders, padding
    console_at_least(needed).print(table)
