"""A small asyncio client of the stream protocol (SPEC §8) that resumes by itself.

::

    async with StreamClient("ws://127.0.0.1:8765/sync", jwt) as client:
        reply = await client.subscribe(project_gid, jobs=[token])   # the "subscribed" reply
        async for item in client.events():
            if "op" in item:   # a notice, see below
                ...
            else:              # a sync event: {"type", "cursor", "action", "data_type", …}
                ...

Contract
--------
* :meth:`StreamClient.subscribe` returns the server's ``subscribed`` message (with its
  ``jobs`` snapshot and ``recovered`` flag) or raises :class:`StreamError` (403, 400, …).
* :meth:`StreamClient.events` yields sync events in the order the server sent them.  The
  client remembers, per subscription, the last ``cc`` cursor and the last project-space
  cursor it yielded (:attr:`StreamClient.cursors`).
* When the connection drops for any reason but a failed authentication (4001) — a restart of
  the stream server (1001), a slow-consumer or lost-history close (4008), a network error —
  the client reconnects with capped exponential back-off, authenticates and re-subscribes
  every subscription from its remembered cursors.  Each re-subscription's ``subscribed``
  reply is yielded by :meth:`events` as a *notice* (a dict with ``"op": "subscribed"``);
  ``recovered: false`` in it means events were lost for good and the caller should reload
  state (the notice's ``jobs`` snapshot is the current state of the unfinished jobs).
* Unsolicited server errors (``{"op": "error", "code": 403, "project": …}`` when a membership
  is revoked) are yielded as notices too; the subscription is forgotten.
* A failed authentication raises :class:`AuthFailed` (from ``__aenter__``, or from
  :meth:`events` after a reconnect).  With ``reconnect=False`` a dropped connection raises
  :class:`StreamError` from :meth:`events` instead.
* A server that refuses the login because this address failed too often (error 429, close
  4029) raises :class:`StreamError` with ``code`` 429 from ``__aenter__``; when reconnecting,
  the client waits and tries again with its back-off.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

logger = logging.getLogger(__name__)

AUTH_FAILED = 4001
TOO_MANY = 4029


class StreamError(Exception):
    """The server refused a request, or the connection could not be kept."""

    def __init__(self, message: str, *, code: int | None = None,
                 reply: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reply = reply or {}


class AuthFailed(StreamError):
    """The server rejected the JWT (close code 4001)."""


@dataclass
class Subscription:
    """One subscription and the cursors to resume it from."""

    project: str
    jobs: list[str] | None = None
    cc_cursor: int | None = None
    cursor: int | None = None
    waiter: asyncio.Future[dict[str, Any]] | None = field(default=None, repr=False)

    def request(self, request_id: int) -> dict[str, Any]:
        msg: dict[str, Any] = {"op": "subscribe", "project": self.project, "id": request_id}
        if self.cc_cursor is not None:
            msg["cc_cursor"] = self.cc_cursor
        if self.cursor is not None and self.project != "*":
            msg["cursor"] = self.cursor
        if self.jobs is not None:
            msg["jobs"] = self.jobs
        return msg

    def confirmed(self, reply: dict[str, Any], *, asked: bool) -> None:
        """Apply a ``subscribed`` reply.  ``asked``: cursors were sent with the request."""
        if not (asked and reply.get("recovered")):
            # Nothing will be replayed: what we have is "now".
            self.cc_cursor = reply.get("cc.cursor")
            self.cursor = reply.get("cursor")


class StreamClient:
    """See the module docstring.  Use as an async context manager."""

    def __init__(
        self, url: str, jwt: str, *, reconnect: bool = True, max_backoff: float = 5.0,
        open_timeout: float = 10.0, max_queue: int = 10_000,
    ) -> None:
        self.url = url
        self.jwt = jwt
        self.reconnect = reconnect
        self.max_backoff = max_backoff
        self.open_timeout = open_timeout
        self.user: str | None = None
        self.reconnects = 0
        self.subscriptions: dict[str, Subscription] = {}
        # Bounded: a consumer that stops reading makes this client stop reading the socket,
        # and the server's slow-consumer handling (coalesce, then 4008) takes over.
        self._queue: asyncio.Queue[dict[str, Any] | BaseException] = asyncio.Queue(max_queue)
        self._ws: ClientConnection | None = None
        self._connected = asyncio.Event()
        self._ids = itertools.count(1)
        self._inflight: dict[int, tuple[Subscription, bool]] = {}
        self._others: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    # -- public API -----------------------------------------------------------------------

    async def __aenter__(self) -> StreamClient:
        await self._connect()
        self._task = asyncio.create_task(self._run(), name="stream-client")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._closing = True
        if self._ws is not None:
            await self._ws.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    @property
    def cursors(self) -> dict[str, dict[str, int | None]]:
        """``{project or "*": {"cc_cursor": …, "cursor": …}}`` to resume from."""
        return {
            p: {"cc_cursor": s.cc_cursor, "cursor": s.cursor}
            for p, s in self.subscriptions.items()
        }

    async def subscribe(
        self, project: str, *, cc_cursor: int | None = None, cursor: int | None = None,
        jobs: Iterable[str] | None = None,
    ) -> dict[str, Any]:
        """Subscribe (or re-subscribe) to a project gid or ``"*"``; returns the server's
        ``subscribed`` message, or raises :class:`StreamError` with the server's code."""
        sub = Subscription(
            project, jobs=None if jobs is None else list(jobs), cc_cursor=cc_cursor,
            cursor=cursor, waiter=asyncio.get_running_loop().create_future(),
        )
        self.subscriptions[project] = sub
        if self._connected.is_set():
            try:
                await self._send_subscribe(sub)
            except ConnectionClosed:
                pass  # the reconnect sends it again
        assert sub.waiter is not None
        return await sub.waiter

    async def unsubscribe(self, project: str) -> None:
        if self.subscriptions.pop(project, None) is None or not self._connected.is_set():
            return
        assert self._ws is not None
        rid = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._others[rid] = fut
        try:
            await self._ws.send(json.dumps({"op": "unsubscribe", "project": project, "id": rid}))
            await fut
        except ConnectionClosed:
            pass  # nothing to undo: a reconnect does not re-send it

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Sync events (and notices, which have an ``"op"`` key), in arrival order."""
        while True:
            item = await self._queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item

    # -- connection -----------------------------------------------------------------------

    async def _connect(self) -> None:
        ws = await connect(
            self.url, open_timeout=self.open_timeout, max_size=None, compression=None,
        )
        try:
            await ws.send(json.dumps({"op": "auth", "jwt": self.jwt}))
            async with asyncio.timeout(self.open_timeout):
                reply = json.loads(await ws.recv())
        except ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.code == AUTH_FAILED:
                raise AuthFailed(exc.rcvd.reason or "authentication failed", code=401) from None
            if exc.rcvd is not None and exc.rcvd.code == TOO_MANY:
                raise StreamError(exc.rcvd.reason or "too many failed logins", code=429) from None
            raise
        if reply.get("op") == "error" and reply.get("code") == 429:
            # Too many failed logins from this address (not this token's fault): the
            # reconnect loop waits and tries again.
            await ws.close()
            raise StreamError(str(reply.get("message")), code=429, reply=reply)
        if reply.get("op") != "auth" or not reply.get("ok"):
            await ws.close()
            raise AuthFailed(f"unexpected auth reply: {reply!r}", code=401)
        self.user = reply.get("user")
        self._ws = ws
        self._connected.set()

    async def _run(self) -> None:
        try:
            while True:
                assert self._ws is not None
                try:
                    async for raw in self._ws:
                        await self._on_message(json.loads(raw))
                except ConnectionClosed:
                    pass
                self._connected.clear()
                if self._closing:
                    return
                code = self._ws.close_code
                if code == AUTH_FAILED:
                    raise AuthFailed(self._ws.close_reason or "authentication failed", code=401)
                if not self.reconnect:
                    raise StreamError(f"connection closed (code {code})", code=code)
                logger.info("stream connection closed (code %s); reconnecting", code)
                await self._reconnect()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            for sub in self.subscriptions.values():
                if sub.waiter is not None and not sub.waiter.done():
                    sub.waiter.set_exception(exc)
            await self._queue.put(exc)

    async def _reconnect(self) -> None:
        # Requests of the old connection will never be answered.
        self._inflight.clear()
        for fut in self._others.values():
            if not fut.done():
                fut.set_result({})
        self._others.clear()
        delay = 0.1
        while True:
            try:
                await self._connect()
                break
            except AuthFailed:
                raise
            except StreamError as exc:
                if exc.code != 429:
                    raise
                logger.info("reconnect refused (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff)
            except (OSError, TimeoutError, ConnectionClosed, InvalidHandshake) as exc:
                logger.info("reconnect failed (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff)
        self.reconnects += 1
        for sub in list(self.subscriptions.values()):
            await self._send_subscribe(sub)

    async def _send_subscribe(self, sub: Subscription) -> None:
        assert self._ws is not None
        rid = next(self._ids)
        request = sub.request(rid)
        self._inflight[rid] = (sub, "cc_cursor" in request or "cursor" in request)
        await self._ws.send(json.dumps(request))

    # -- messages -------------------------------------------------------------------------

    async def _on_message(self, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        if op == "sync":
            for event in msg.get("sync", ()):
                self._track(event)
                await self._queue.put(event)
            return
        rid = msg.get("id")
        if rid in self._inflight:
            sub, asked = self._inflight.pop(rid)
            await self._answer(sub, asked, msg)
        elif rid in self._others:
            fut = self._others.pop(rid)
            if not fut.done():
                fut.set_result(msg)
        elif op == "error":
            project = msg.get("project")
            if msg.get("code") == 403 and isinstance(project, str):
                self.subscriptions.pop(project, None)
            await self._queue.put(msg)

    async def _answer(self, sub: Subscription, asked: bool, msg: dict[str, Any]) -> None:
        current = self.subscriptions.get(sub.project) is sub
        waiter, sub.waiter = sub.waiter, None
        if msg.get("op") == "subscribed":
            sub.confirmed(msg, asked=asked)
            if waiter is not None and not waiter.done():
                waiter.set_result(msg)
            elif current:
                await self._queue.put(msg)  # a re-subscription after a reconnect
            return
        if current:
            del self.subscriptions[sub.project]
        error = StreamError(
            str(msg.get("message", "subscribe failed")), code=msg.get("code"), reply=msg
        )
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        elif current:
            await self._queue.put(msg)

    def _track(self, event: dict[str, Any]) -> None:
        """Remember the newest cursor of every subscription this event belongs to."""
        space, cursor = event.get("type"), event.get("cursor")
        if not isinstance(cursor, int):
            return
        if space == "cc":
            data = event.get("data") or {}
            owners: Iterable[Any] = (data.get("project_gid"), "*")
            for key in owners:
                sub = self.subscriptions.get(key) if isinstance(key, str) else None
                if sub is not None and (sub.cc_cursor is None or cursor > sub.cc_cursor):
                    sub.cc_cursor = cursor
        elif isinstance(space, str):
            sub = self.subscriptions.get(space)
            if sub is not None and (sub.cursor is None or cursor > sub.cursor):
                sub.cursor = cursor
