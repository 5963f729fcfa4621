"""Rate limiting in Redis: requests per user, and failed logins per name and per address.

Each request of a user increments the counter of the current window
(:func:`bulkjobs.keys.rate_limit`, window number = ``now // window``) and renews its expiry, in
one pipelined round trip.  A request beyond ``limit`` in its window is refused (the HTTP layer
answers 429 in its dialect's envelope); the counter keeps counting, so a client hammering
through the refusal does not get a fresh allowance before the window ends.  ``reset`` is the
number of whole seconds until the window ends (at least 1), as DatoCMS's ``X-RateLimit-Reset``
gives it and its client waits for.

Failed logins are counted the same way, in windows of their own (:class:`LoginLimits`): per
user name and per client address, each with its limit.  :func:`login_blocked` is asked
before a credential is checked (one ``MGET``) and says how long to wait once either counter
reached its limit; :func:`login_failed` counts a failure.  A successful login resets
nothing, so a correct password does not buy a guesser a fresh allowance.  The ``_async``
twins serve the websocket server's asyncio client.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis
import redis.asyncio

from bulkjobs import keys
from bulkjobs.settings import get_settings


@dataclass(frozen=True, slots=True)
class RateState:
    limit: int
    remaining: int
    reset: int
    exceeded: bool

    def headers(self) -> list[tuple[bytes, bytes]]:
        """The ``X-RateLimit-*`` response headers (raw ASGI pairs)."""
        return [(b"x-ratelimit-limit", str(self.limit).encode()),
                (b"x-ratelimit-remaining", str(self.remaining).encode()),
                (b"x-ratelimit-reset", str(self.reset).encode())]


def hit(client: redis.Redis, user_gid: str, *, limit: int, window: int,
        now: float | None = None) -> RateState:
    """Count one request of ``user_gid`` (INCR + EXPIRE, one round trip) and say whether it
    is within ``limit`` requests per ``window`` seconds."""
    return hit_many(client, [user_gid], limit=limit, window=window, now=now)[0]


def hit_many(client: redis.Redis, user_gids: Sequence[str], *, limit: int, window: int,
             now: float | None = None) -> list[RateState]:
    """:func:`hit` for several requests (a user may occur more than once: each occurrence is
    one more request, counted in order), in one pipelined round trip."""
    now = time.time() if now is None else now
    number = int(now // window)
    pipe = client.pipeline(transaction=False)
    for user_gid in user_gids:
        key = keys.rate_limit(user_gid, number)
        pipe.incr(key)
        pipe.expire(key, window + 1)
    counts = [int(c) for c in pipe.execute()[0::2]]
    reset = max(1, math.ceil((number + 1) * window - now))
    return [RateState(limit=limit, remaining=max(0, limit - count), reset=reset,
                      exceeded=count > limit) for count in counts]


@dataclass(frozen=True, slots=True)
class LoginLimits:
    per_name: int  # failures of one user name per window; 0: not limited
    per_address: int  # failures from one client address per window; 0: not limited
    window: int  # seconds


def login_limits() -> LoginLimits:
    """The limits of the settings (``LOGIN_FAILURES_PER_NAME`` and friends)."""
    settings = get_settings()
    return LoginLimits(per_name=settings.login_failures_per_name,
                       per_address=settings.login_failures_per_address,
                       window=settings.login_failure_window)


def _login_counters(limits: LoginLimits, name: str | None, address: str | None,
                    now: float) -> tuple[list[tuple[str, int]], int]:
    """The ``(key, limit)`` counters that apply, and the seconds left in the window."""
    number = int(now // limits.window)
    counters = [(keys.login_failures(kind, value, number), limit)
                for kind, value, limit in (("name", name, limits.per_name),
                                           ("address", address, limits.per_address))
                if value is not None and limit > 0]
    return counters, max(1, math.ceil((number + 1) * limits.window - now))


def _blocked(counters: list[tuple[str, int]], counts: Sequence[object], reset: int
             ) -> int | None:
    full = any(int(c or 0) >= limit for (_, limit), c in zip(counters, counts, strict=True))
    return reset if full else None


def login_blocked(client: redis.Redis, limits: LoginLimits, *, name: str | None,
                  address: str | None, now: float | None = None) -> int | None:
    """Seconds to wait if ``name`` or ``address`` already failed as often as allowed in the
    current window; ``None`` if a login may be tried."""
    counters, reset = _login_counters(limits, name, address, time.time() if now is None else now)
    if not counters:
        return None
    return _blocked(counters, client.mget([k for k, _ in counters]), reset)


def login_failed(client: redis.Redis, limits: LoginLimits, *, name: str | None,
                 address: str | None, now: float | None = None) -> None:
    """Count one failed login of ``name`` from ``address`` (one round trip)."""
    counters, _ = _login_counters(limits, name, address, time.time() if now is None else now)
    pipe = client.pipeline(transaction=False)
    for key, _ in counters:
        pipe.incr(key)
        pipe.expire(key, limits.window + 1)
    pipe.execute()


async def login_blocked_async(client: redis.asyncio.Redis, limits: LoginLimits, *,
                              name: str | None, address: str | None) -> int | None:
    """:func:`login_blocked` on an asyncio client."""
    counters, reset = _login_counters(limits, name, address, time.time())
    if not counters:
        return None
    return _blocked(counters, await client.mget([k for k, _ in counters]), reset)


async def login_failed_async(client: redis.asyncio.Redis, limits: LoginLimits, *,
                             name: str | None, address: str | None) -> None:
    """:func:`login_failed` on an asyncio client."""
    counters, _ = _login_counters(limits, name, address, time.time())
    pipe = client.pipeline(transaction=False)
    for key, _ in counters:
        pipe.incr(key)
        pipe.expire(key, limits.window + 1)
    await pipe.execute()
