"""The arguments of the append, end and cursor scripts (:mod:`bulkjobs.synclog.scripts`): which
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
    args += _pack_args(space, packs)
    args.append(once_ttl)
    return keylist, args


def _pack_args(space: str, packs: Sequence[tuple[str, str, Sequence[str]]]) -> list[Any]:
    """The arguments of ``packs``: ``(n, project, action, data type, gids)`` each."""
    args: list[Any] = []
    for data_type, action, gids in packs:
        joined = " ".join(gids)
        if joined.count(" ") != len(gids) - 1:
            raise ValueError("a gid of a packed entry holds a space")
        args += [len(gids), space, action, data_type, joined]
    return args


def end_call(
    space: str, held: Sequence[NewEvent], terminal: NewEvent, once: str, counted: Sequence[Any],
    project: str, parts: Sequence[tuple[str, Sequence[tuple[str, str, Sequence[str]]]]],
    dedupe_ttl: int,
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of the script of a job's end (``APPEND_END_LUA``): ``held`` job events,
    then the record events of ``project`` in ``parts`` ``(once-key, packs)``, then the
    ``terminal`` event under ``once``, counted with ``counted``
    (:func:`bulkjobs.metrics.job_state_args`)."""
    now_us = _now_us()
    keylist = [*_append_keys(space, None), keys.metrics_progress(), once]
    args: list[Any] = [space, now_us, now_us // 60_000_000, dedupe_ttl, len(held)]
    for ev in [*held, terminal]:
        args += [ev.project, ev.key, ev.status, json.dumps(ev.body, separators=(",", ":"))]
    args += [*counted, project, len(parts)]
    if parts:
        keylist += [keys.sync_stream(project), keys.sync_counter(project),
                    keys.sync_floor(project), keys.sync_marks(project)]
        keylist += [part_once for part_once, _ in parts]
    for _, packs in parts:
        args.append(len(packs))
        args += _pack_args(project, packs)
    return keylist, args
