"""The websocket relay: SPEC §8 over ``ws://host:STREAM_PORT/sync``, plus ``/healthz`` and
``/metrics`` over plain HTTP on the same port.

This is the asyncio layer around the cores that do no I/O: :mod:`stream.protocol` (what the
frames say), :mod:`stream.relay` (what a subscribe replays, whether it is ``recovered``, the
cursors it starts from), :mod:`stream.fanout` (who gets what) and :mod:`stream.limits`
(requests per second, replay size).  One :class:`~stream.reader.Reader` per process feeds
the :class:`~stream.fanout.Hub`; connections never read Redis for live events, and
:class:`~stream.writer.Writer` writes them without a task per connection.

Protocol choices the SPEC leaves open
-------------------------------------
* Replies echo the request's ``"id"``; ``unsubscribe`` is answered with
  ``{"op": "unsubscribed", "project": …}``.
* ``subscribed.jobs`` items are ``{"token", "project_gid", "job", "status", "info",
  "created_on", "updated_on"}`` (the job's event ``data`` plus its token), oldest first.  With
  a ``jobs`` filter they are exactly those jobs, finished or not.
* A ``jobs`` filter narrows a subscription to those jobs' ``cc`` events (no project-space
  events).  ``"*"`` carries the ``cc`` (job) events and, without a ``jobs`` filter, the live
  project-space events of every visible project.  One ``cursor`` cannot stand for many
  spaces, so ``"*"`` takes none (400): project-space events are replayed only to a
  subscription of that one project with its ``cursor``.  (An unfiltered ``"*"`` of an ops
  user makes the reader follow every project space.)
* What a subscribe replays and whether it is ``recovered``: see :mod:`stream.relay`.
* Lost history (Redis lost its data or restarted, or the log was trimmed past the reader
  or during a replay): the affected connections are closed with 4008; resuming from their
  last cursor they get ``recovered: false``.
* Requests per connection are limited (:class:`stream.limits.OpBudget`): beyond
  ``STREAM_OPS_PER_SECOND`` in one second each is answered ``{"op": "error", "code": 429,
  "retry_after": 1}`` without being read; beyond twice as many the connection is closed with
  4029.
* Failed authentications (bad or missing token, by header, first message or re-``auth``)
  are counted per client address as failed HTTP logins are (:mod:`bulkjobs.ratelimit`); once
  ``LOGIN_FAILURES_PER_ADDRESS`` is reached, a new connection from that address gets
  ``{"op": "error", "code": 429, "retry_after": N}`` and is closed with 4029 before any
  token is looked at.
* Membership is re-read every ``MEMBERSHIP_REFRESH`` seconds and on every subscribe; a
  revoked project is unsubscribed and announced with ``{"op": "error", "code": 403,
  "project": …, "message": "membership revoked; unsubscribed"}``.
* A revocation made with the CLI (``users disable``, ``users remove-ops``, ``apikeys
  revoke``) is announced in Redis (:mod:`bulkjobs.revocations`); the reader hands the notice
  over before any event appended after it, and the user's connections are judged again at
  once (:meth:`StreamServer.revoked`), so no such event reaches them.  The periodic refresh
  stays the safety net for a notice that could not be written.
* The token is judged as the HTTP API judges it on every request
  (:func:`models.accounts.backed`), at ``auth``, on every subscribe and at every refresh:
  ``ops`` is what the user row says now, a token made from an API key sees that key's
  project only, and a user disabled or deleted, a session ended or older than
  ``SESSION_MAX_AGE`` or a revoked API key closes the connection with 4001.
* A later ``auth`` on an open connection re-checks the token (same user only) and replaces
  the connection's.  Token expiry does not close an authenticated connection; the refresh
  does the revoking.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import urlsplit

import redis.asyncio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from bulkjobs import keys, tokens
from bulkjobs.connections import AsyncBlockingSentinelPool, async_sentinel_pool
from bulkjobs.errors import BulkJobsError, Unauthorized
from bulkjobs.metrics import metrics_allowed
from bulkjobs.ratelimit import login_blocked_async, login_failed_async, login_limits
from bulkjobs.settings import get_settings
from bulkjobs.synclog import AsyncSyncLog, Item
from bulkjobs.tokens import Claims
from models.engine import database_answers
from stream import access, protocol, relay
from stream.fanout import DEFAULT_LIMIT, Hub
from stream.limits import OpBudget
from stream.metrics import StreamCollector
from stream.protocol import close_reason
from stream.reader import Reader
from stream.writer import Peer, Writer

logger = logging.getLogger(__name__)

#: Close codes of SPEC §8.
AUTH_FAILED = 4001
TOO_SLOW = 4008
#: Too many requests on one connection, or too many failed logins from its address.
TOO_MANY = 4029

#: Events read per XRANGE while replaying (and drained before the next page).
REPLAY_PAGE = 500

#: Seconds a revocation notice's re-judging may take before the connections it concerns are
#: closed instead (1013: try again later): the reader waits for it before delivering more.
REVOKE_TIMEOUT = 5.0

#: Redis connections the server uses for commands besides the reader's own.
COMMAND_CONNECTIONS = 32


class StreamServer:
    """One stream process: the websocket server, the reader and the membership refresher.

    ``async with StreamServer(port=0) as server`` starts it (``server.port`` is the bound
    port) and closes it; ``python -m stream`` uses :meth:`run_until`.
    """

    def __init__(
        self, *, host: str = "0.0.0.0", port: int | None = None,
        outbox_limit: int = DEFAULT_LIMIT, auth_timeout: float | None = None,
        membership_refresh: float | None = None, ping_interval: float | None = 20.0,
        write_limit: int = 64 * 1024, block_ms: int = 1000, ops_per_second: int | None = None,
        max_replay: int | None = None,
    ) -> None:
        settings = get_settings()
        self.ops_per_second = (
            settings.stream_ops_per_second if ops_per_second is None else ops_per_second
        )
        self.max_replay = settings.stream_max_replay if max_replay is None else max_replay
        self.host = host
        self.port = settings.stream_port if port is None else port
        self.outbox_limit = outbox_limit
        self.auth_timeout = settings.auth_timeout if auth_timeout is None else auth_timeout
        self.membership_refresh = (
            settings.membership_refresh if membership_refresh is None else membership_refresh
        )
        self.ping_interval = ping_interval
        self.write_limit = write_limit
        self.writer = Writer(write_limit=write_limit)
        self.hub = Hub()
        self.redis = _command_client(settings.redis_url)
        self.log = AsyncSyncLog(self.redis, replicas=settings.replicas,
                                replica_timeout=settings.sync_replica_timeout)
        self.reader = Reader(self, url=settings.redis_url, control=self.redis, block_ms=block_ms,
                             sentinel=settings if settings.sentinels else None,
                             replicas=settings.replicas,
                             replica_timeout=settings.sync_replica_timeout)
        self.reader_grace = block_ms / 1000 + 5
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StreamCollector(self))
        self.slow_closed = 0
        self.gap_closed = 0
        #: Revocation notices applied so far: a judgement read from the database before one
        #: of them was applied may be older than the revocation, and is not applied.
        self.revocations = 0
        self._server: Server | None = None
        self._background: list[asyncio.Task[None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await serve(
            self._handle, self.host, self.port, process_request=self._process_request,
            # No permessage-deflate: its zlib contexts cost ~100 KiB per connection.
            compression=None, max_size=64 * 1024, max_queue=4,
            write_limit=self.write_limit, ping_interval=self.ping_interval,
            ping_timeout=self.ping_interval, close_timeout=5,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._background = [
            asyncio.create_task(self.reader.run(), name="stream-reader"),
            asyncio.create_task(self._refresh_loop(), name="stream-membership"),
        ]
        logger.info("stream server listening on ws://%s:%s/sync", self.host, self.port)

    async def run_until(self, stop: asyncio.Event) -> int:
        """Serve until ``stop`` is set (exit code 0) or a background task dies (1)."""
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait(
            {stopper, *self._background}, return_when=asyncio.FIRST_COMPLETED
        )
        code = 0
        for task in done:
            if task is stopper:
                continue
            code = 1
            exc = None if task.cancelled() else task.exception()
            logger.critical("%s stopped unexpectedly: %r; exiting", task.get_name(), exc,
                            exc_info=exc)
        stopper.cancel()
        await self.close()
        return code

    async def close(self) -> None:
        """Close every websocket with 1001 (going away), then stop the background tasks."""
        if self._server is not None:
            logger.info("closing %d connection(s) with 1001", len(self.hub.subscribers))
            self._server.close()  # websockets closes open connections with 1001
            await self._server.wait_closed()
            self._server = None
        self.reader.stop()
        for task in self._background:
            task.cancel()
        if self._background:
            # The reader returns within one XREAD block even if redis-py swallowed the
            # cancellation (see Reader.stop).
            _, pending = await asyncio.wait(self._background, timeout=self.reader_grace)
            for task in pending:
                logger.warning("%s did not stop in time", task.get_name())
        self._background = []
        await self.redis.aclose()
        logger.info("stream server stopped")

    async def __aenter__(self) -> StreamServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def failed(self) -> bool:
        """Has a background task (reader, refresher) died?"""
        return any(t.done() for t in self._background)

    # -- the reader's sink ----------------------------------------------------------------

    def spaces(self) -> set[str]:
        return self.hub.spaces()

    def deliver(self, events: list[Item]) -> None:
        routed = self.hub.route(events)
        if routed.direct:
            self.writer.direct(routed.events, cast(list[Peer], routed.direct))
        for peer in routed.slow:
            self.slow_closed += 1
            self._close(cast(Peer, peer), TOO_SLOW, "too slow; resume from your last cursor")
        if routed.woken:
            self.writer.flush(routed.woken)

    def gap(self, space: str) -> None:
        for peer in self.hub.gap(space):
            self.gap_closed += 1
            self._close(cast(Peer, peer), TOO_SLOW, "sync log lost events; resume from last cursor")

    async def revoked(self, users: set[str]) -> None:
        """Judge the connections of ``users`` again now (a revocation notice named them): the
        reader delivers nothing more until they are narrowed or closed.  If the database does
        not answer in time they are closed with 1013, so that nothing after the revocation
        reaches them either way."""
        peers = [p for p in cast(list[Peer], list(self.hub.subscribers)) if p.user in users]
        if not peers:
            return
        logger.info("revocation notice for %d connection(s) of user(s) %s", len(peers),
                    ", ".join(sorted(users)))
        try:
            async with asyncio.timeout(REVOKE_TIMEOUT):
                verdicts = await asyncio.to_thread(access.recheck, {p.claims for p in peers})
        except Exception as exc:
            logger.warning("cannot judge connections after a revocation: %s; closing them", exc)
            for peer in peers:
                if peer in self.hub:
                    self._close(peer, 1013, "access changed; reconnect")
            return
        self.revocations += 1
        self._judge(peers, verdicts)

    @property
    def deliveries(self) -> int:
        """Events written to subscribers so far."""
        return self.writer.deliveries

    # -- connections ----------------------------------------------------------------------

    def _alive(self, peer: Peer) -> bool:
        return peer in self.hub and peer.ws.state is State.OPEN

    def _close(self, peer: Peer, code: int, reason: str) -> None:
        self.hub.remove(peer)
        peer.slow = True
        logger.info("closing connection of user %s with %s: %s", peer.user, code, reason)
        self._spawn(peer.ws.close(code, close_reason(reason)))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, ws: ServerConnection) -> None:
        peer: Peer | None = None
        try:
            auth = await self._authenticate(ws)
            if auth is None:
                return
            claims, request_id = auth
            try:
                claims, allowed = await asyncio.to_thread(access.admit, claims)
                cc_cursor = (await self.log.cursors(keys.CC_SPACE))[0]
            except Unauthorized as exc:
                await ws.close(AUTH_FAILED, close_reason(exc.message))
                return
            except (RedisError, OSError) as exc:
                logger.warning("cannot accept a connection: %s", exc)
                await ws.close(1013, "sync log unavailable; try again later")
                return
            peer = Peer(ws, claims, allowed=allowed, limit=self.outbox_limit)
            self.hub.add(peer)
            await ws.send(protocol.auth_ok(claims.user, cc_cursor, request_id=request_id))
            budget = OpBudget(self.ops_per_second)
            async for message in ws:
                if peer.slow:  # a peer being closed with 4008 is not served any more
                    continue
                verdict = budget.take(time.monotonic())
                if verdict == "serve":
                    await self._dispatch(peer, message)
                elif verdict == "refuse":
                    await ws.send(protocol.error(
                        429, f"too many requests: at most {self.ops_per_second} per second",
                        retry_after=1))
                else:
                    await ws.close(TOO_MANY, "too many requests")
                    break
        except ConnectionClosed:
            pass
        finally:
            if peer is not None:
                self.hub.remove(peer)

    async def _authenticate(self, ws: ServerConnection) -> tuple[Claims, Any] | None:
        """Header or first message; on failure the connection is closed with 4001 (and the
        failure counted against the client's address), and with 4029 at once while that
        address has failed too often."""
        header = ws.request.headers.get("Authorization") if ws.request else None
        wait = await self._login_blocked(ws)
        if wait is not None:
            await ws.send(protocol.error(429, "too many failed logins; try again later",
                                         retry_after=wait))
            await ws.close(TOO_MANY, f"too many failed logins; retry in {wait} s")
            return None
        try:
            if header is not None:
                return verify(protocol.bearer(header)), None
            async with asyncio.timeout(self.auth_timeout):
                message = await ws.recv()
            request = protocol.parse(message)
            if not isinstance(request, protocol.Auth):
                raise Unauthorized("authenticate first")
            return verify(request.jwt), request.id
        except TimeoutError:
            await ws.close(AUTH_FAILED, "no authentication in time")
        except BulkJobsError as exc:  # Unauthorized, ProtocolError
            if isinstance(exc, Unauthorized):
                await self._login_failed(ws)
            await ws.close(AUTH_FAILED, close_reason(exc.message))
        return None

    async def _login_blocked(self, ws: ServerConnection) -> int | None:
        """Seconds to wait if the client's address failed to log in too often; ``None`` also
        when Redis does not answer (fail open, as the HTTP API does)."""
        try:
            return await login_blocked_async(self.redis, login_limits(), name=None,
                                             address=_address(ws))
        except (RedisError, OSError) as exc:
            logger.warning("failed logins not checked, Redis unavailable: %s", exc)
            return None

    async def _login_failed(self, ws: ServerConnection) -> None:
        try:
            await login_failed_async(self.redis, login_limits(), name=None,
                                     address=_address(ws))
        except (RedisError, OSError) as exc:
            logger.warning("failed login not counted, Redis unavailable: %s", exc)

    async def _dispatch(self, peer: Peer, message: str | bytes) -> None:
        """Act on one client message; every failure becomes an error frame, never a crash."""
        request_id: Any = None
        try:
            request = protocol.parse(message)
            request_id = request.id
            if isinstance(request, protocol.Subscribe):
                await self._subscribe(peer, request)
            elif isinstance(request, protocol.Unsubscribe):
                self.hub.unsubscribe(peer, request.project)
                await peer.ws.send(protocol.unsubscribed(request.project, request_id=request_id))
            else:
                await self._reauth(peer, request)
        except protocol.ProtocolError as exc:
            await peer.ws.send(protocol.error(400, exc.message, request_id=exc.request_id))
        except (RedisError, OSError) as exc:
            logger.warning("sync log unavailable while serving %s: %s", peer.user, exc)
            await peer.ws.send(
                protocol.error(503, "sync log unavailable; retry", request_id=request_id)
            )
        except ConnectionClosed:
            raise
        except Exception:
            logger.exception("failed to handle a message of user %s", peer.user)
            await peer.ws.send(protocol.error(500, "internal error", request_id=request_id))

    async def _reauth(self, peer: Peer, request: protocol.Auth) -> None:
        try:
            claims = verify(request.jwt)
        except Unauthorized as exc:
            await self._login_failed(peer.ws)
            await peer.ws.close(AUTH_FAILED, close_reason(exc.message))
            return
        if claims.user != peer.user:
            raise protocol.ProtocolError("already authenticated as another user")
        if not await self._admit(peer, claims):
            return
        cc_cursor = (await self.log.cursors(keys.CC_SPACE))[0]
        await peer.ws.send(protocol.auth_ok(peer.user, cc_cursor, request_id=request.id))

    async def _subscribe(self, peer: Peer, req: protocol.Subscribe) -> None:
        """Register for live events first, then snapshot and replay, then release the held
        live events through the dedupe: gap-free and duplicate-free (see stream.fanout).
        What is replayed and from which cursors is :func:`stream.relay.plan`'s to decide."""
        if not await self._admit(peer, peer.claims):
            return
        single = req.project != "*"
        if relay.forbidden(req.project, peer.allowed):
            await peer.ws.send(protocol.error(
                403, "not a member of this project", project=req.project, request_id=req.id,
            ))
            return
        existed = peer.star if req.project == "*" else req.project in peer.projects
        peer.hold()
        try:
            self.hub.subscribe(peer, req.project, jobs=req.jobs)
            try:
                cc = relay.Cursors(*await self.log.cursors(keys.CC_SPACE))
                space: relay.Cursors | None = None
                if single:
                    space = relay.Cursors(*await self.log.cursors(req.project))
                    if req.jobs is None:
                        self.reader.want(req.project, space.last)
                elif req.jobs is None:
                    await self._read_new_spaces()
                plan = relay.plan(req, cc, space, max_replay=self.max_replay)
                self.hub.start(peer, req.project, cc=plan.cc_from, space=plan.p_from)
                projects = [req.project] if single else sorted(peer.allowed)
                snapshot = await asyncio.to_thread(access.job_snapshot, projects, req.jobs)
            except BaseException:
                if not existed:  # a failed re-subscribe keeps the subscription it replaced
                    self.hub.unsubscribe(peer, req.project)
                raise
            await peer.ws.send(protocol.subscribed(
                req.project, recovered=plan.recovered, cc_cursor=plan.cc_last,
                cursor=plan.p_last, jobs=snapshot, request_id=req.id,
            ))
            if plan.replay:
                for part in plan.replays:
                    if not await self._replay(peer, part):
                        self.gap_closed += 1
                        self._close(peer, TOO_SLOW, "sync log lost events during replay; resume")
                        return
                self.hub.start(peer, req.project, cc=plan.cc_last, space=plan.p_last)
        finally:
            if peer in self.hub and self.hub.release(peer):
                self.writer.flush([peer])

    async def _replay(self, peer: Peer, part: relay.Replay) -> bool:
        """Queue the events of ``part`` page by page, draining between pages.  Returns False
        when the history has a hole (:func:`stream.relay.dense`)."""
        expected = part.after + 1
        while expected <= part.upto and self._alive(peer):
            # Read in events, not entries; a resume from inside a packed entry gets the rest
            # of it (the log cuts the first item to start at ``expected``).
            events = await self.log.read_items(part.space, expected - 1, count=REPLAY_PAGE,
                                               upto=part.upto)
            expected, whole = relay.dense(events, expected)
            if not whole:
                logger.warning("hole in sync space %s at cursor %s during replay",
                               part.space, expected)
                return False
            self.hub.replay(peer, events)
            await self.writer.drain(peer)
        return True

    # -- membership -----------------------------------------------------------------------

    async def _admit(self, peer: Peer, claims: Claims) -> bool:
        """Judge ``claims`` for ``peer`` now (:func:`stream.access.admit`) and apply it: the
        connection's token, ``ops`` and visible projects (unsubscribing what it lost), or a
        close with 4001 (then False)."""
        while True:
            seen = self.revocations
            try:
                now, allowed = await asyncio.to_thread(access.admit, claims)
            except Unauthorized as exc:
                self._close(peer, AUTH_FAILED, exc.message)
                return False
            if seen == self.revocations:
                break  # else it may predate a revocation applied meanwhile: judge again
        self._apply(peer, now, allowed)
        return True

    def _apply(self, peer: Peer, claims: Claims, allowed: frozenset[str]) -> None:
        peer.claims, peer.ops = claims, claims.ops
        self._revoke(peer, self.hub.set_allowed(peer, allowed))

    async def _refresh_loop(self) -> None:
        """Re-judge the token and re-read the memberships of every connection, so that
        revocations (a membership, the ``ops`` flag, a disabled user, an ended session, an
        API key) apply to open connections within ``membership_refresh`` seconds."""
        while True:
            await asyncio.sleep(self.membership_refresh)
            peers = cast(list[Peer], list(self.hub.subscribers))
            if not peers:
                continue
            seen = self.revocations
            try:
                verdicts = await asyncio.to_thread(access.recheck, {p.claims for p in peers})
            except Exception as exc:  # the database may be briefly unavailable; try again
                logger.warning("membership refresh failed: %s", exc)
                continue
            if seen != self.revocations:
                continue  # read before a revocation applied meanwhile: it could undo it
            self._judge(peers, verdicts)
            try:  # a "*" subscription may have gained projects
                await self._read_new_spaces()
            except (RedisError, OSError) as exc:
                logger.warning("cannot follow new project spaces yet: %s", exc)

    def _judge(self, peers: list[Peer], verdicts: dict[Claims, access.Verdict]) -> None:
        """Apply :func:`stream.access.recheck`'s verdicts: close with 4001, or narrow."""
        for peer in peers:
            verdict = verdicts.get(peer.claims)
            if peer not in self.hub or verdict is None:  # re-authenticated meanwhile
                continue
            if isinstance(verdict, Unauthorized):
                self._close(peer, AUTH_FAILED, verdict.message)
            else:
                self._apply(peer, *verdict)

    async def _read_new_spaces(self) -> None:
        """Have the reader follow, from their current cursors, the project spaces that some
        connection now receives but nobody read yet (a ``"*"`` subscription, or a project
        that became visible to one).  Called after the hub was updated, so nothing appended
        after the cursors were taken is missed."""
        unread = self.reader.unread(self.hub.spaces())
        if unread:
            for space, (last, _) in (await self.log.cursors_many(unread)).items():
                self.reader.want(space, last)

    def _revoke(self, peer: Any, projects: list[str]) -> None:
        for project in projects:
            logger.info("user %s lost access to project %s; unsubscribed", peer.user, project)
            broadcast([peer.ws], protocol.error(
                403, "membership revoked; unsubscribed", project=project,
            ))

    # -- plain HTTP -----------------------------------------------------------------------

    async def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path == "/livez":  # the process serves requests; nothing else is checked
            return _respond(ws, HTTPStatus.OK, '{"status": "ok"}\n', "application/json")
        if path == "/healthz":
            return await self._healthz(ws)
        if path == "/readyz":
            return await self._healthz(ws, database=True)
        if path == "/metrics":
            if not metrics_allowed(request.headers.get("Authorization", "")):
                return _respond(ws, HTTPStatus.UNAUTHORIZED, "METRICS_TOKEN required\n",
                                "text/plain")
            return _respond(ws, HTTPStatus.OK, generate_latest(self.registry).decode(),
                            CONTENT_TYPE_LATEST)
        if path != "/sync":
            return ws.respond(HTTPStatus.NOT_FOUND, "Not found\n")
        return None

    async def _healthz(self, ws: ServerConnection, *, database: bool = False) -> Response:
        """Redis answers and the reader follows the log (``/healthz``); for ``/readyz`` the
        database answers too (every connection's authentication reads it)."""
        checks: dict[str, bool] = {}
        if database:
            try:
                async with asyncio.timeout(2):
                    await asyncio.to_thread(database_answers)
                checks["database"] = True
            except Exception:
                checks["database"] = False
        try:
            async with asyncio.timeout(2):
                await self.redis.ping()
            redis_ok = True
        except Exception:
            redis_ok = False
        checks["redis"] = redis_ok
        checks["reader"] = self.reader.connected and not self.failed
        ok = all(checks.values())
        body = json.dumps({"status": "ok" if ok else "unavailable", **checks})
        status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
        return _respond(ws, status, body + "\n", "application/json")


def verify(jwt: str) -> Claims:
    """:func:`bulkjobs.tokens.verify`, refusing text no JWT can be (a JWT is ASCII) as
    :class:`Unauthorized` rather than failing to encode it."""
    if not jwt.isascii():
        raise Unauthorized("malformed token")
    return tokens.verify(jwt)


def _address(ws: ServerConnection) -> str | None:
    """The client's IP address (the peer of the TCP connection)."""
    remote = ws.remote_address
    return str(remote[0]) if remote else None


def _command_client(url: str) -> redis.asyncio.Redis:
    """The server's client for short commands (cursors, replays, health, CLIENT UNBLOCK).

    A *blocking* pool: a burst of connections authenticating at once waits for a free Redis
    connection instead of failing with "Too many connections" (``make_async_redis`` uses a
    plain pool, fine for the API but not for thousands of websockets arriving together).
    """
    options: dict[str, Any] = dict(
        max_connections=COMMAND_CONNECTIONS, timeout=10, socket_connect_timeout=5,
        socket_timeout=10,
        # After a Redis restart every pooled connection is dead; without a retry on a fresh
        # connection the first command on each would fail a client's subscribe (1013/503).
        # Connection errors only: a timeout may mean a frozen Redis, and must not wait longer.
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 3,
                    supported_errors=(RedisConnectionError,)),
    )
    settings = get_settings()
    if settings.sentinels:  # the primary the sentinels name, whatever url says
        pool = async_sentinel_pool(settings, AsyncBlockingSentinelPool, **options)
    else:
        pool = redis.asyncio.BlockingConnectionPool.from_url(url, **options)
    return redis.asyncio.Redis(connection_pool=pool)


def _respond(ws: ServerConnection, status: HTTPStatus, body: str, content_type: str) -> Response:
    response = ws.respond(status, body)
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = content_type
    return response
