"""The arguments of the append and cursor scripts (:mod:`bulkjobs.synclog.scripts`): which
keys of a space they touch and how the events travel, built here for both clients."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from bulkjobs import keys
from bulkjobs.synclog.events import NewEvent


def _now_us() -> int:
    return int(time.time() * 1_000_000)


def _append_keys(space: str, once: str | None) -> list[str]:
    """The KEYS of both append scripts: stream, counter, floor, marks, spaces, metrics, and
    the once-key when there is one."""
    keylist = [
        keys.sync_stream(space), keys.sync_counter(space), keys.sync_floor(space),
        keys.sync_marks(space), keys.sync_spaces(), keys.metrics(),
    ]
    if once:
        keylist.append(once)
    return keylist


def append_call(
    space: str, events: Sequence[NewEvent], dedupe: str | None, dedupe_ttl: int
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of the single-event append script."""
    now_us = _now_us()
    keylist = _append_keys(space, dedupe)
    args: list[Any] = [space, now_us, now_us // 60_000_000, dedupe_ttl, len(events)]
    for ev in events:
        args += [ev.project, ev.key, ev.status, json.dumps(ev.body, separators=(",", ":"))]
    return keylist, args


def cursor_call(space: str) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of the cursors script."""
    return [
        keys.sync_stream(space), keys.sync_counter(space), keys.sync_floor(space),
        keys.sync_marks(space),
    ], [_now_us()]


def packed_call(
    space: str, packs: Sequence[tuple[str, str, Sequence[str]]], once: str | None = None,
    once_ttl: int = 0,
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of the packed append script (one entry per pack)."""
    now_us = _now_us()
    keylist = _append_keys(space, once)
    args: list[Any] = [space, now_us, now_us // 60_000_000, len(packs)]
    for data_type, action, gids in packs:
        joined = " ".join(gids)
        if joined.count(" ") != len(gids) - 1:
            raise ValueError("a gid of a packed entry holds a space")
        args += [len(gids), space, action, data_type, joined]
    args.append(once_ttl)
    return keylist, args
