"""Whether a request holds a database connection at a given call: queueing a job takes a
connection of its own from the same pool, so a route that still held its session's meanwhile
could, with as many requests in flight as the pool has connections, wait on itself until the
pool's timeout (then 500).  Connections are counted by the thread that took them: the
process's message sender deletes outbox rows from a thread of its own at any moment."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event

from models.engine import get_engine


@contextlib.contextmanager
def holding_at(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> Iterator[list[bool]]:
    """Wrap ``module.name``; the list yielded gets, for each call, whether the calling thread
    held a connection of the pool at that moment."""
    holders: dict[int, str] = {}

    def checkout(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        holders[id(record)] = threading.current_thread().name

    def checkin(dbapi_conn: Any, record: Any) -> None:
        holders.pop(id(record), None)

    held: list[bool] = []
    real = getattr(module, name)

    def spy(*args: Any, **kwargs: Any) -> Any:
        held.append(threading.current_thread().name in holders.values())
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    pool = get_engine().pool
    event.listen(pool, "checkout", checkout)
    event.listen(pool, "checkin", checkin)
    try:
        yield held
    finally:
        event.remove(pool, "checkout", checkout)
        event.remove(pool, "checkin", checkin)
