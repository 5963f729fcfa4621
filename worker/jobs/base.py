"""What every job handler gets and returns.

A handler is a plain function ``batch(conn, ctx, item_ids) -> failures``: it applies the
operation to one batch of selected items inside the caller's transaction, guarded by the
state it changes (so running it twice is a no-op), and returns the items it could not
process with a reason.  It never commits; the runner commits the batch together with the
job's progress.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, bindparam, text

from models.resolve import Mode
from models.selection import Kind


@dataclass(frozen=True, slots=True)
class Context:
    token: str
    project_gid: str
    actor: dict[str, Any]
    params: dict[str, Any]
    now: float


@dataclass(frozen=True, slots=True)
class Failure:
    gid: str
    reason: str


Batch = Callable[[Connection, Context, Sequence[int]], list[Failure]]


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A job of the catalogue: its name, what its selection selects, and its batch step."""

    name: str
    kind: Kind
    mode: Mode
    batch: Batch
    # What the endpoint accepts besides the selection (validated before queueing).
    params: tuple[str, ...] = field(default_factory=tuple)


def ids_param(sql: str) -> Any:
    """``text(sql)`` with ``:ids`` expanded from a list (one placeholder per id)."""
    return text(sql).bindparams(bindparam("ids", expanding=True))
