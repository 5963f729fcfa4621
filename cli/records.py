"""``bulkjobs records preview``: what a bulk record job of a selection would take, without
queueing it or writing anything (:func:`worker.preview.preview`, as ``records/bulk/preview``
answers it)."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from cli.common import acting_user, err, print_rows, ready, refuse, require_project
from worker.preview import PREVIEWED

records_app = typer.Typer(help="Look at records before a bulk job acts on them.",
                          no_args_is_help=True)

#: ``--job`` takes a preview's name (``delete``) or its job's (``bulk_delete_records``).
ALIASES = {job: name for name, job in PREVIEWED.items()}


@records_app.command("preview")
def records_preview(
    project: Annotated[str, typer.Option(help="the project's gid")],
    job: Annotated[str, typer.Option(
        help=f"the job: {', '.join(PREVIEWED)} (or bulk_<job>_records)")],
    selection: Annotated[str, typer.Option(help="the selection as JSON")],
    username: Annotated[str | None, typer.Option(help="act as this user")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """The records a bulk job of the selection would take: their total, how many each entry
    adds and the first of them, in the order the job takes them (exit 2: a bad job,
    selection or project)."""
    from bulkjobs.errors import BulkJobsError
    from models.engine import get_engine
    from models.selection import parse_selection
    from worker.preview import preview

    name = ALIASES.get(job, job)
    if name not in PREVIEWED:
        err.print(f"[red]--job must be one of {', '.join(PREVIEWED)}")
        raise typer.Exit(2)
    try:
        parsed = json.loads(selection)
    except ValueError as exc:
        err.print(f"[red]--selection is not JSON: {exc}")
        raise typer.Exit(2) from None
    ready()
    user = acting_user(username)
    try:
        require_project(user, project)
        result = preview(get_engine(), project_gid=project, job=name,
                         selection=parse_selection(parsed, kind="records"))
    except BulkJobsError as exc:
        refuse(exc, 2)
    if as_json:
        sys.stdout.write(json.dumps(result.public()) + "\n")
        return
    from rich.console import Console

    per_entry = ", ".join(map(str, result.entries)) or "-"
    Console().print(f"total {result.total}; per entry {per_entry}; "
                    f"the first {len(result.sample)}:")
    print_rows(["gid"], [[gid] for gid in result.sample], False)
