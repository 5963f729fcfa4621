"""Publishing job state changes to the sync log.

Events carry absolute state (``total``, ``remaining``), read from the job row after the
batch that changed it committed, never deltas.  :class:`Publisher` rate-limits progress
events to one per ``PROGRESS_INTERVAL`` per job; state changes (processing, terminal) are
always published.  The terminal event is appended with a once-key, so however often a crashed
job is finished or re-announced, subscribers see exactly one terminal event, and it is counted
in the metrics by the script that appends it (:func:`append_end`): exactly once too.

A job started in its claim's transaction holds its ``processing`` event back while its first
batch runs (:meth:`Publisher.hold`): a job done in that batch appends it with its record
events and its terminal event in one round trip; any other goes on publishing as before.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from bulkjobs import keys, metrics
from bulkjobs.statuses import TERMINAL
from bulkjobs.synclog import NewEvent, SyncLog, job_event


@dataclass(frozen=True, slots=True)
class JobState:
    token: str
    project_gid: str
    job: str
    status: str
    info: dict[str, Any]
    created_on: float
    updated_on: float

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


def append_state(log: SyncLog, state: JobState, *, insert: bool = False) -> list[int]:
    """Append one job state event (terminal ones at most once per job, see
    :func:`append_end`)."""
    if state.terminal:
        return append_end(log, state)
    cursors = log.append(keys.CC_SPACE, [_event(state, insert)])
    if cursors:
        _count(log, state)
    return cursors


def append_end(log: SyncLog, state: JobState, *, held: Sequence[JobState] = (),
               project: str = "",
               records: Sequence[tuple[str, Iterable[tuple[str, str, Sequence[str]]]]] = (),
               ) -> list[int]:
    """Append a job's terminal state at most once, after the states ``held`` back for it
    and the record events of ``project`` it owes (``records``: ``(once-key, groups)``, see
    :meth:`SyncLog.append_end`), in one script call; the terminal state is counted in the
    metrics by that call when it appends it, so exactly once however often the job is
    announced.  The held states are not counted: the terminal state counts every item the
    job processed."""
    counted = metrics.job_state_args(
        token=state.token, job=state.job, status=state.status, info=state.info,
        duration=state.updated_on - state.created_on, terminal=True)
    return log.append_end(keys.CC_SPACE, _event(state, False),
                          once_key=keys.job_terminal(state.token), counted=counted,
                          held=[_event(s, False) for s in held], project=project,
                          records=records)


def append_states(log: SyncLog, states: Sequence[JobState], *, insert: bool = False
                  ) -> list[int]:
    """Append the events of several jobs' non-terminal states in one call (a terminal state
    goes through :func:`append_state`, which appends it at most once)."""
    if any(state.terminal for state in states):
        raise ValueError("terminal states are appended one by one, at most once each")
    cursors = log.append(keys.CC_SPACE, [_event(state, insert) for state in states])
    for state in states:
        _count(log, state)
    return cursors


def append_states_once(log: SyncLog, states: Sequence[tuple[JobState, str]], *,
                       insert: bool = False) -> list[bool]:
    """Append the events of several jobs' non-terminal states, each at most once for its
    once-key, in one round trip (:meth:`SyncLog.append_each`); whether each was appended now
    (``False``: it had been already, and is not counted again)."""
    if any(state.terminal for state, _ in states):
        raise ValueError("terminal states are appended one by one, at most once each")
    replies = log.append_each(keys.CC_SPACE, [([_event(state, insert)], once)
                                              for state, once in states])
    for (state, _), cursors in zip(states, replies, strict=True):
        if cursors:
            _count(log, state)
    return [bool(cursors) for cursors in replies]


def _event(state: JobState, insert: bool) -> NewEvent:
    return job_event(
        token=state.token, project=state.project_gid, job=state.job, status=state.status,
        info=state.info, created_on=state.created_on, updated_on=state.updated_on, insert=insert,
    )


def _count(log: SyncLog, state: JobState) -> None:
    metrics.job_state(log.r, token=state.token, job=state.job, status=state.status,
                      info=state.info, duration=state.updated_on - state.created_on,
                      terminal=state.terminal)


class Publisher:
    """Per-job progress publisher with the cadence of SPEC §6."""

    def __init__(self, log: SyncLog, *, interval: float) -> None:
        self.log = log
        self.interval = interval
        self.last_sent = 0.0
        self.last_remaining: int | None = None
        self._closed = False
        self._held: JobState | None = None
        self._lock = threading.Lock()

    def hold(self, state: JobState) -> None:
        """Hold the job's ``processing`` state back while its first batch runs: it counts as
        sent for the cadence, and is appended before the next event published (the
        heartbeat's, should the batch run long, or the next batch's progress), by
        :meth:`release`, or handed to the terminal event's round trip by :meth:`close`."""
        with self._lock:
            self._held = state
            self.last_sent = time.monotonic()
            remaining = state.info.get("remaining")
            if isinstance(remaining, int):
                self.last_remaining = remaining

    @property
    def holding(self) -> bool:
        """Whether a held state is still waiting (:meth:`hold`)."""
        with self._lock:
            return self._held is not None

    def release(self) -> None:
        """Append the held state now, if any: the job goes on (or stops) without finishing
        in its first batch."""
        with self._lock:
            self._append_held()

    def close(self) -> JobState | None:
        """Publish no more progress: the job is finished and its terminal event is next.
        A progress event being appended meanwhile (the heartbeat's) is in the log before
        this returns, so nothing can come after the terminal event.  Returns the held state
        not yet appended, which the caller appends with the terminal event, before it."""
        with self._lock:
            self._closed = True
            held, self._held = self._held, None
            return held

    def _append_held(self) -> None:
        if self._held is not None:
            append_state(self.log, self._held)
            self._held = None

    def publish(self, state: JobState, *, force: bool = False) -> bool:
        """Append ``state`` unless rate-limited, or older than what was already sent.

        The heartbeat thread reads the job row and publishes it when the batch in hand runs
        long; the batch may commit and publish between that read and this call.  Such a
        stale state (more ``remaining`` than already announced) is dropped, so that
        ``remaining`` never goes up in the log."""
        with self._lock:
            if self._closed and not state.terminal:
                return False
            now = time.monotonic()
            if not force and not state.terminal and now - self.last_sent < self.interval:
                return False
            remaining = state.info.get("remaining")
            if (not state.terminal and isinstance(remaining, int)
                    and self.last_remaining is not None and remaining > self.last_remaining):
                return False
            self._append_held()  # the job's processing event before any other
            append_state(self.log, state)
            self.last_sent = now
            if isinstance(remaining, int):
                self.last_remaining = remaining
            return True

    def idle_for(self) -> float:
        return time.monotonic() - self.last_sent
