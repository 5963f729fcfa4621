"""Following one job live over the stream, with a rich progress bar (``bulkjobs watch``)."""

from __future__ import annotations

import asyncio
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from models.engine import get_engine
from models.jobs import TERMINAL
from worker.progress import JobState
from worker.rows import load, state_of


def current(token: str) -> JobState | None:
    with get_engine().connect() as conn:
        row = load(conn, token)
    return state_of(row) if row is not None else None


async def watch(token: str, *, url: str, jwt: str, console: Console) -> JobState:
    """Show the job's progress until it ends; returns its final state."""
    from stream.client import StreamClient

    state = current(token)
    if state is None:
        raise LookupError(token)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as bar:
        # Escaped: "[done]" is rich markup for a style named "done" and would vanish.
        task = bar.add_task(escape(f"{state.job} [{state.status}]"), total=None)

        def show(status: str, info: dict[str, Any]) -> None:
            total = info.get("total")
            done = (total or 0) - info.get("remaining", total or 0)
            bar.update(task, description=escape(f"{state.job} [{status}]"), total=total or None,
                       completed=done)

        show(state.status, state.info)
        if state.status in TERMINAL:
            return state
        async with StreamClient(url, jwt) as client:
            # With a jobs filter the snapshot holds the job whatever its state, so a job that
            # ended between the first look and the subscription is seen ending here.
            reply = await client.subscribe(state.project_gid, jobs=[token])
            if _from_snapshot(reply, token, show):
                return current(token) or state
            async for item in client.events():
                if item.get("op") == "subscribed":  # resumed after a reconnect
                    if _from_snapshot(item, token, show):
                        break
                    continue
                if item.get("data_key") != token:
                    continue
                data = item["data"]
                show(data["status"], data["info"])
                if data["status"] in TERMINAL:
                    break
    final = current(token)
    assert final is not None
    return final


def _from_snapshot(reply: dict[str, Any], token: str, show: Any) -> bool:
    """Show the job's state from a ``subscribed`` snapshot; True when it has ended."""
    for job in reply.get("jobs", []):
        if job.get("token") == token:
            show(job["status"], job.get("info", {}))
            return bool(job["status"] in TERMINAL)
    return False


def run_watch(token: str, *, url: str, jwt: str, console: Console) -> JobState:
    return asyncio.run(watch(token, url=url, jwt=jwt, console=console))
