"""Rate limiting in the HTTP layer (SPEC §9.1): every authenticated request of every dialect
is counted per user (:mod:`bulkjobs.ratelimit`) by :func:`check`, which the dialects' auth
dependencies call once the user is known.  Past the limit it raises
:class:`~bulkjobs.errors.RateLimited`, which each dialect renders in its own envelope (429).

The ``X-RateLimit-Limit``/``-Remaining``/``-Reset`` headers are added by
:class:`RateLimitHeaders`, a plain ASGI middleware, to whatever answer the request gets —
success or error — so no route or renderer handles them.  The state travels in the ASGI
scope's ``state`` (``request.state.ratelimit``).

Failed logins (Unicat ``auth`` and ``login``) are limited by :func:`login_attempt`, around
the credential check: per user name and per client address (:mod:`bulkjobs.ratelimit`),
429 with ``Retry-After`` before any password is checked once either limit is reached.

Redis being unavailable does not turn every request into an error: the checks then let the
request through (fail open) and log a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import redis
from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bulkjobs.connections import get_redis
from bulkjobs.errors import RateLimited, Unauthorized
from bulkjobs.ratelimit import RateState, hit_many, login_blocked, login_failed, login_limits
from bulkjobs.settings import get_settings

logger = logging.getLogger(__name__)

STATE_KEY = "ratelimit"


def check(request: Request, user_gid: str) -> None:
    """Count this request for ``user_gid``; :class:`RateLimited` past the limit."""
    if getattr(request.state, STATE_KEY, None) is not None:
        return  # this request was counted already
    admit(request, count([user_gid])[0])


def count(user_gids: Sequence[str]) -> list[RateState | None]:
    """Count one request for each of ``user_gids`` in one round trip; ``None`` for each when
    there is no limit or Redis is unavailable (fail open)."""
    settings = get_settings()
    if settings.rate_limit <= 0:
        return [None] * len(user_gids)
    try:
        return list(hit_many(get_redis(), user_gids, limit=settings.rate_limit,
                             window=settings.rate_limit_window))
    except redis.RedisError as exc:
        logger.warning("rate limit not checked, Redis unavailable: %s", exc)
        return [None] * len(user_gids)


def admit(request: Request, state: RateState | None) -> None:
    """:func:`remember` a counted request's state; :class:`RateLimited` past the limit."""
    remember(request, state)
    raise_if_exceeded(state)


def remember(request: Request, state: RateState | None) -> None:
    """Keep a counted request's state for its answer's headers."""
    if state is not None:
        setattr(request.state, STATE_KEY, state)


def raise_if_exceeded(state: RateState | None) -> None:
    if state is not None and state.exceeded:
        raise RateLimited("Rate limit exceeded: too many requests",
                          info={"limit": state.limit, "reset": state.reset})


@contextmanager
def login_attempt(request: Request, *, name: str | None = None) -> Iterator[None]:
    """Guard one login by ``name`` (``None`` for an API key) from the request's client
    address: :class:`RateLimited` (with ``retry_after``) before the credential is checked
    when either has failed too often in the current window; an :class:`Unauthorized` raised
    inside is counted as a failure.  Redis unavailable: no limit."""
    limits = login_limits()
    address = request.client.host if request.client else None
    try:
        wait = login_blocked(get_redis(), limits, name=name, address=address)
    except redis.RedisError as exc:
        logger.warning("failed logins not checked, Redis unavailable: %s", exc)
        wait = None
    if wait is not None:
        raise RateLimited("Too many failed logins; try again later",
                          info={"retry_after": wait})
    try:
        yield
    except Unauthorized:
        try:
            login_failed(get_redis(), limits, name=name, address=address)
        except redis.RedisError as exc:
            logger.warning("failed login not counted, Redis unavailable: %s", exc)
        raise


class RateLimitHeaders:
    """ASGI middleware: adds the rate-limit headers to the answer of a counted request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Created here, so that every copy of the scope further in shares this one dict.
        states: dict[str, Any] = scope.setdefault("state", {})

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                state = states.get(STATE_KEY)
                if isinstance(state, RateState):
                    message["headers"] = [*message.get("headers", []), *state.headers()]
            await send(message)

        await self.app(scope, receive, send_with_headers)
