"""Queueing jobs from every dialect: one path into :func:`worker.submit.submit_many`.

Job requests arrive concurrently.  Instead of each committing its own job row and making
its own Redis round trips from a thread of its own, they are gathered (group commit): the
requests an event loop has read together are one batch (:class:`Queuer`), which the
process's queueing thread handles at once:

1. counts the requests against their users' rate limits (one pipelined round trip),
2. checks that each token may act on the project, as the database says now (two queries,
   :func:`models.accounts.may_act`),
3. checks each job name and selection (:func:`worker.submit.check`),
4. writes the job rows (one transaction) and appends their ``queued`` events (one script
   call), and hands the tokens to :class:`Sender` for their Celery messages.

A request of an async route is one ask (:func:`queue_for`): its access is checked, then its
job queued, in the same batch.  Sync routes, whose dependency has checked the access, queue
through :func:`queue_job`: steps 3 and 4 in their own thread, a batch of one.

Each request gets its own outcome: its token, or the error it alone caused (429, 403, a bad
selection), or the error that stopped the whole batch (the database or Redis away: 503) —
a refused request queues nothing.  There is no timer: a lone request is a batch of one and
waits for nothing; under load, the requests that arrive while a batch is being written form
the next one, so the commit and the round trips are shared by as many requests as arrive in
their time (``bulkjobs_queueing_batch_size`` in ``/metrics``).

The Celery messages are sent by the sending thread after the answer; ``enqueue_many`` is
looked up when they are sent (not bound at import), so tests can stand in for the Celery
worker.  Should that thread ever die, the next job queued starts another.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import queue
import threading
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from prometheus_client import Histogram

from api import ratelimit
from api.deps import Actor
from bulkjobs.connections import get_synclog
from bulkjobs.ratelimit import RateState
from bulkjobs.tokens import Claims
from models.accounts import may_act
from models.engine import get_engine
from worker import app as worker_app
from worker.submit import APPENDED, Submission, check, send, submit_many

logger = logging.getLogger(__name__)

#: Most asks handled in one batch.
MAX_BATCH = 256

BATCH_SIZE = Histogram("bulkjobs_queueing_batch_size",
                       "Asks (access checks and submissions) handled together by the web "
                       "process's queueing thread.", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))


@dataclass(slots=True)
class Ask:
    """One request's part of a batch.  With ``claims``: an access check on ``project_gid``
    (counted against the rate limit, membership checked).  With a ``submission``: a job to
    queue — after that check when both are given; without ``claims``, the route's dependency
    has checked the access."""

    submission: Submission | None = None
    claims: Claims | None = None
    project_gid: str = ""


@dataclass(slots=True)
class Outcome:
    token: str | None = None
    error: BaseException | None = None
    rate: RateState | None = None
    #: An access ask's claims as the database backs them (what the renewed JWT says).
    claims: Claims | None = None

    def result(self) -> str:
        if self.error is not None:
            raise self.error
        assert self.token is not None
        return self.token


class Queuer:
    """Gathers the asks of one event loop into batches and runs each in the process's
    queueing thread, one batch at a time.

    An ask waits for the end of the loop's current round (``call_soon``), so the requests
    the loop has read together go together; while a batch is being written, the asks that
    arrive form the next one, handed over as soon as the thread is free.  Batch sizes so
    follow the load with no timer: one under light load, tens under heavy load."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: list[tuple[Ask, asyncio.Future[Outcome]]] = []
        self.scheduled = False
        self.busy = False

    async def queue(self, ask: Ask) -> Outcome:
        future: asyncio.Future[Outcome] = self.loop.create_future()
        self.pending.append((ask, future))
        if not self.scheduled and not self.busy:
            self.scheduled = True
            self.loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self.scheduled = False
        if self.busy or not self.pending:
            return
        batch, self.pending = self.pending[:MAX_BATCH], self.pending[MAX_BATCH:]
        self.busy = True
        done = self.loop.run_in_executor(_thread(), process_safely, [ask for ask, _ in batch])
        done.add_done_callback(lambda f: self._settle(batch, f))

    def _settle(self, batch: list[tuple[Ask, asyncio.Future[Outcome]]],
                done: asyncio.Future[list[Outcome]]) -> None:
        self.busy = False
        outcomes = done.result() if not done.cancelled() else [
            Outcome(error=RuntimeError("queueing cancelled"))] * len(batch)
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if not future.done():  # the client may have gone away meanwhile
                future.set_result(outcome)
        self._flush()


_queuers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Queuer] = \
    weakref.WeakKeyDictionary()
_executor: tuple[int, ThreadPoolExecutor] | None = None


def _queuer() -> Queuer:
    loop = asyncio.get_running_loop()
    queuer = _queuers.get(loop)
    if queuer is None:
        queuer = _queuers[loop] = Queuer(loop)
    return queuer


def _thread() -> ThreadPoolExecutor:
    """The queueing thread of this process (made again in a forked child)."""
    global _executor
    if _executor is None or _executor[0] != os.getpid():
        _executor = (os.getpid(), ThreadPoolExecutor(1, thread_name_prefix="queueing"))
    return _executor[1]


class Sender:
    """Sends the Celery messages of the jobs this process queued, from a thread of its own.

    A request is answered once its job row is committed and its ``queued`` event appended;
    the event's outbox row is deleted here, then the message follows at once, but the
    answer waits for neither (nor does the next batch).  A message not sent (the broker
    refused it, or the process died first) is sent again by the reaper after
    QUEUED_STALE_AFTER, as for any queued job whose message never arrived.  The messages
    waiting when the thread comes round are sent together
    (:func:`worker.app.enqueue_many`: one broker round trip).  On a clean exit the messages
    still waiting are sent first."""

    def __init__(self) -> None:
        self.inbox: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def put(self, tokens: Sequence[str]) -> None:
        for token in tokens:
            self.inbox.put(token)
        if self._pid != os.getpid() or self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._pid != os.getpid() or self._thread is None \
                        or not self._thread.is_alive():
                    self._pid = os.getpid()
                    self._thread = threading.Thread(target=self._run, name="sending",
                                                    daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        while True:
            self._send([self.inbox.get()])

    def drain(self) -> None:
        """Send what is still waiting (at exit)."""
        while not self.inbox.empty():
            self._send([])

    def _send(self, tokens: list[str]) -> None:
        """Send ``tokens`` and whatever else is waiting (at most :data:`MAX_BATCH`) as one
        publish batch."""
        while len(tokens) < MAX_BATCH:
            try:
                tokens.append(self.inbox.get_nowait())
            except queue.Empty:
                break
        if tokens:
            APPENDED.clear()  # the outbox rows of the queued events appended so far
            send(tokens, lambda tokens: worker_app.enqueue_many(tokens))


SENDER = Sender()
atexit.register(SENDER.drain)


def process_safely(asks: Sequence[Ask]) -> list[Outcome]:
    BATCH_SIZE.observe(len(asks))
    try:
        return process(asks)
    except Exception as exc:  # never leave a request waiting
        logger.exception("queueing a batch of %d jobs failed", len(asks))
        return [Outcome(error=exc) for _ in asks]


def process(asks: Sequence[Ask]) -> list[Outcome]:
    """Steps 1–4 of the module docstring for one batch; an outcome per ask, in order."""
    outcomes = [Outcome() for _ in asks]
    access = [i for i, ask in enumerate(asks) if ask.claims is not None]
    if access:
        check_access([asks[i] for i in access], [outcomes[i] for i in access])
    valid = []
    for i, ask in enumerate(asks):
        if ask.submission is None or outcomes[i].error is not None:
            continue
        try:
            check(ask.submission.job, ask.submission.params)
        except Exception as exc:
            outcomes[i].error = exc
        else:
            valid.append(i)
    if valid:
        try:
            tokens = submit_many([asks[i].submission for i in valid],  # type: ignore[misc]
                                 log=get_synclog(), enqueue=SENDER.put, clear_outbox=False)
        except Exception as exc:
            for i in valid:
                outcomes[i].error = exc
        else:
            for i, token in zip(valid, tokens, strict=True):
                outcomes[i].token = token
    return outcomes


def check_access(asks: Sequence[Ask], outcomes: Sequence[Outcome]) -> None:
    """Steps 1 and 2 for the access asks of a batch."""
    states = ratelimit.count([ask.claims.user for ask in asks])  # type: ignore[union-attr]
    for outcome, state in zip(outcomes, states, strict=True):
        outcome.rate = state
        try:
            ratelimit.raise_if_exceeded(state)
        except Exception as exc:
            outcome.error = exc
    pending = [(ask, outcome) for ask, outcome in zip(asks, outcomes, strict=True)
               if outcome.error is None]
    if not pending:
        return
    try:
        with get_engine().connect() as conn:
            allowed = may_act(conn, [(ask.claims, ask.project_gid)  # type: ignore[misc]
                                     for ask, _ in pending])
    except Exception as exc:
        for _, outcome in pending:
            outcome.error = exc
        return
    for (_, outcome), backed in zip(pending, allowed, strict=True):
        if isinstance(backed, Claims):
            outcome.claims = backed
        else:
            outcome.error = backed


async def queue_for(request: Request, claims: Claims, project_gid: str, job: str,
                    params: dict[str, Any] | None) -> tuple[str | None, Claims]:
    """Count the request against the rate limit of the user of ``claims``, check that they
    may act on ``project_gid`` and, with ``params``, queue ``job`` — one ask of the next
    batch; the token (``None`` without ``params``: the access check alone) and the claims as
    the database backs them, or the error."""
    submission = (Submission(project_gid, job, params, {"type": "user", "id": claims.user})
                  if params is not None else None)
    outcome = await _queuer().queue(Ask(submission, claims, project_gid))
    ratelimit.remember(request, outcome.rate)
    if outcome.error is not None:
        raise outcome.error
    assert outcome.claims is not None
    return outcome.token, outcome.claims


def queue_job(actor: Actor, job: str, params: dict[str, Any]) -> str:
    """Queue ``job`` with ``params`` (selection included) for the acting member, whose access
    the route has checked; the token."""
    [outcome] = process_safely([Ask(Submission(actor.project.gid, job, params,
                                                actor.as_editor()))])
    return outcome.result()
