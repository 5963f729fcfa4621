"""Queueing jobs from every dialect: one path into :func:`worker.submit.submit_many`.

Job requests arrive concurrently.  Instead of each committing its own job row and making
its own Redis round trips from a thread of its own, they are gathered (group commit): the
requests an event loop has read together are one batch (:class:`Queuer`), which the
process's queueing thread handles at once:

1. counts the requests against their users' rate limits (one pipelined round trip),
2. checks that each token may act on the project, as the database says now (two queries,
   :func:`models.accounts.may_act`),
3. checks each job name and selection (:func:`worker.submit.check`),
4. reserves the ``Idempotency-Key`` of each request that sent one (one transaction,
   :func:`models.idempotency.reserve`): a request that repeats one whose job is queued
   is answered that job's token here, and queues nothing,
5. writes the job rows (one transaction, which names each reserved key's job) and appends
   their ``queued`` events (one script call), and hands the tokens to :class:`Sender` for
   their Celery messages; a request whose job was not written gives its key back.

Every route queues through the same batches.  A request of an async route is one ask
(:func:`queue_for`): its access is checked, then its job queued, in the same batch.  A sync
route (run in a threadpool thread), whose dependency has checked the access, hands its ask
to its event loop's batches and waits for the outcome (:func:`queue_job`,
:func:`queue_submission`): steps 3 to 5, with the requests of the moment.  Called outside a
request (no event loop to hand it to), an ask is a batch of one in the caller's thread.

Each request gets its own outcome: its token, or the error it alone caused (429, 403, a bad
selection, a bad or clashing ``Idempotency-Key``), or the error that stopped the whole batch
(the database or Redis away: 503) — a refused request queues nothing.  There is no timer:
a lone request is a batch of one and waits for nothing; under load, the requests that arrive
while a batch is being written form the next one, so the commit and the round trips are
shared by as many requests as arrive in their time (``bulkjobs_queueing_batch_size`` in
``/metrics``).

The Celery messages are sent by the sending thread after the answer; ``enqueue_many`` is
looked up when they are sent (not bound at import), so tests can stand in for the Celery
worker.  Should that thread ever die, the next job queued starts another.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Annotated, Any

import anyio
import anyio.from_thread
from fastapi import Depends, Header, Request
from prometheus_client import Histogram

from api import ratelimit
from api.deps import Actor
from bulkjobs.connections import get_synclog
from bulkjobs.ratelimit import RateState
from bulkjobs.tokens import Claims
from models import idempotency
from models.accounts import may_act
from models.engine import get_engine
from models.idempotency import (
    Follow,
    Key,
    Replay,
    Reservation,
    job_of,
    parse_key,
    release,
    reserve,
)
from worker import app as worker_app
from worker.submit import APPENDED, Submission, checked, send, submit_each

logger = logging.getLogger(__name__)

#: Most asks handled in one batch.
MAX_BATCH = 256

BATCH_SIZE = Histogram("bulkjobs_queueing_batch_size",
                       "Asks (access checks and submissions) handled together by the web "
                       "process's queueing thread.", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))


@dataclass(frozen=True, slots=True)
class Idempotency:
    """A request's ``Idempotency-Key`` header as sent (checked in the batch, after the
    access) and the fingerprint of the request (:func:`models.idempotency.fingerprint`)."""

    header: str
    fingerprint: str

    @classmethod
    def of(cls, request: Request, body: bytes) -> Idempotency | None:
        """The request's, or ``None`` without the header."""
        header = request.headers.get(idempotency.HEADER)
        if header is None:
            return None
        try:
            parsed: Any = json.loads(body) if body.strip() else None
        except ValueError:  # refused by the route's own parsing; the text stands for it
            parsed = body.decode("utf-8", "replace")
        return cls(header, idempotency.fingerprint(request.method, request.url.path, parsed))


async def idempotency_of(request: Request, key: Annotated[str | None, Header(
        alias=idempotency.HEADER, description=(
            "Makes the request safe to retry: the same key with the same body within 24 "
            "hours answers the job the first request queued and queues nothing; with "
            "another body 422; while the first is being handled 409. At most 255 "
            "characters; a key is the user's own within the project."))] = None,
) -> Idempotency | None:
    """A queueing route's :class:`Idempotency` (its body is read once and kept by the
    request, so the route's own parsing does not read it again)."""
    return Idempotency.of(request, await request.body()) if key is not None else None


IdempotencyDep = Annotated[Idempotency | None, Depends(idempotency_of)]


@dataclass(slots=True)
class Ask:
    """One request's part of a batch.  With ``claims``: an access check on ``project_gid``
    (counted against the rate limit, membership checked).  With a ``submission``: a job to
    queue — after that check when both are given; without ``claims``, the route's dependency
    has checked the access.  With ``idempotency``: the submission is queued at most once
    per key."""

    submission: Submission | None = None
    claims: Claims | None = None
    project_gid: str = ""
    idempotency: Idempotency | None = None


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
    """Steps 1–5 of the module docstring for one batch; an outcome per ask, in order."""
    outcomes = [Outcome() for _ in asks]
    access = [i for i, ask in enumerate(asks) if ask.claims is not None]
    if access:
        check_access([asks[i] for i in access], [outcomes[i] for i in access])
    keys: dict[int, str] = {}
    parsed: dict[int, Submission] = {}
    for i, ask in enumerate(asks):
        if ask.submission is None or outcomes[i].error is not None:
            continue
        try:
            parsed[i] = checked(ask.submission)  # the selection parsed once, stored with the job
            if ask.idempotency is not None:
                keys[i] = parse_key(ask.idempotency.header)
        except Exception as exc:
            outcomes[i].error = exc
    valid, followers = reserve_keys(asks, outcomes, keys, parsed)
    if not valid:
        return outcomes
    try:
        tokens = submit_each(list(valid.values()), log=get_synclog(), enqueue=SENDER.put,
                             clear_outbox=False)
    except Exception as exc:
        for i in valid:
            outcomes[i].error = exc
        give_back([s.reservation for s in valid.values() if s.reservation is not None])
    else:
        for i, token in zip(valid, tokens, strict=True):
            if isinstance(token, str):
                outcomes[i].token = token
            else:
                outcomes[i].error = token
    for i, first in followers.items():
        outcomes[i].token, outcomes[i].error = outcomes[first].token, outcomes[first].error
    return outcomes


def reserve_keys(asks: Sequence[Ask], outcomes: Sequence[Outcome], keys: dict[int, str],
                 parsed: dict[int, Submission]) -> tuple[dict[int, Submission], dict[int, int]]:
    """Step 4: the submissions to write, by ask, each with its key's reservation, and the
    asks that repeat another of the batch (by ask: that ask), which get its outcome; an ask
    whose key names a job already is answered that job's token, one whose key clashes its
    error."""
    valid = {i: submission for i, submission in parsed.items() if outcomes[i].error is None}
    followers: dict[int, int] = {}
    if not keys:
        return valid, followers
    wanted = [(i, Key(str(valid[i].actor["id"]), valid[i].project_gid, key,
                      asks[i].idempotency.fingerprint))  # type: ignore[union-attr]
              for i, key in keys.items()]
    try:
        answers = reserve(get_engine(), [key for _, key in wanted], now=time.time())
    except Exception as exc:
        answers = [exc] * len(wanted)
    for (i, _), answer in zip(wanted, answers, strict=True):
        if isinstance(answer, Reservation):
            valid[i] = replace(valid[i], reservation=answer)
            continue
        del valid[i]
        if isinstance(answer, Replay):
            outcomes[i].token = answer.token
        elif isinstance(answer, Follow):
            followers[i] = wanted[answer.first][0]
        else:
            outcomes[i].error = answer
    return valid, followers


def give_back(reservations: Sequence[Reservation]) -> None:
    """Release the keys of requests whose jobs were not written, so that the clients may
    retry at once; should that fail too, a retry takes them over after
    :data:`models.idempotency.ABANDONED_AFTER`."""
    try:
        release(get_engine(), reservations)
    except Exception:
        logger.warning("%d idempotency key(s) not released", len(reservations), exc_info=True)


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
                    params: dict[str, Any] | None, idempotency: Idempotency | None = None
                    ) -> tuple[str | None, Claims]:
    """Count the request against the rate limit of the user of ``claims``, check that they
    may act on ``project_gid`` and, with ``params``, queue ``job`` (at most once per
    ``idempotency`` key) — one ask of the next batch; the token (``None`` without
    ``params``: the access check alone) and the claims as the database backs them, or the
    error."""
    submission = (Submission(project_gid, job, params, {"type": "user", "id": claims.user})
                  if params is not None else None)
    outcome = await _queuer().queue(Ask(submission, claims, project_gid, idempotency))
    ratelimit.remember(request, outcome.rate)
    if outcome.error is not None:
        raise outcome.error
    assert outcome.claims is not None
    return outcome.token, outcome.claims


def queue_job(actor: Actor, job: str, params: dict[str, Any],
              idempotency: Idempotency | None = None) -> str:
    """Queue ``job`` with ``params`` (selection included) for the acting member, whose access
    the route has checked, at most once per ``idempotency`` key; the token."""
    return queue_submission(Submission(actor.project.gid, job, params, actor.as_editor()),
                            idempotency)


def queue_submission(submission: Submission, idempotency: Idempotency | None = None) -> str:
    """Queue a submission whose access the route has checked (:func:`queue_job`'s, or one
    the product made, such as a retry's), at most once per ``idempotency`` key, in the
    batches of the event loop whose threadpool thread calls this; the token."""
    ask = Ask(submission, idempotency=idempotency)
    try:
        outcome = anyio.from_thread.run(_queue_on_loop, ask)
    except anyio.NoEventLoopError:  # not a request's thread: a batch of one, here
        [outcome] = process_safely([ask])
    return outcome.result()


async def _queue_on_loop(ask: Ask) -> Outcome:
    return await _queuer().queue(ask)


def replayed(actor: Actor, idempotency: Idempotency | None) -> str | None:
    """The job an earlier request like this one queued under its ``Idempotency-Key``, if
    any, without queueing — for a route whose own checks no longer hold once that job ran
    (a permanent delete's record is gone)."""
    if idempotency is None:
        return None
    key = Key(actor.user, actor.project.gid, parse_key(idempotency.header),
              idempotency.fingerprint)
    with get_engine().connect() as conn:
        return job_of(conn, key, now=time.time())
