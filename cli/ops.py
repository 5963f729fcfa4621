"""The ``stats`` command: what the ops views show (:mod:`models.ops`), in the terminal."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console

from cli.common import ready


def stats(
    project: Annotated[list[str] | None, typer.Option(help="only these projects (repeatable)")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Queue depth, live workers, jobs by status and the last minute's throughput."""
    from rich.table import Table

    from bulkjobs.connections import get_broker_redis, get_redis
    from bulkjobs.settings import get_settings
    from models import ops
    from models.engine import get_engine

    ready()
    settings = get_settings()
    with get_engine().connect() as conn:
        result = ops.collect(conn, client=get_redis(), broker=get_broker_redis(),
                             projects=project or None, heartbeat=settings.worker_heartbeat,
                             stale_after=settings.stale_after)
    if as_json:
        sys.stdout.write(json.dumps(result.as_json()) + "\n")
        return
    table = Table("", "", title="bulkjobs" + (f" ({len(project)} project(s))" if project else ""),
                  show_header=False)
    table.add_row("queue depth", "n/a (broker is not Redis)" if result.queue_depth is None
                  else str(result.queue_depth))
    table.add_row("workers alive", f"{len(result.workers)}  {' '.join(result.workers)}")
    table.add_row("jobs running", str(result.busy))
    for status, n in result.jobs.items():
        table.add_row(f"jobs {status}", str(n))
    rate = result.throughput
    table.add_row(f"items/s (last {rate.window:.0f} s)", f"{rate.items_per_s:,.1f}")
    table.add_row(f"jobs/s (last {rate.window:.0f} s)", f"{rate.jobs_per_s:,.2f}")
    Console().print(table)
