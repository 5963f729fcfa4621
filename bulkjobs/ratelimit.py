"""Per-user rate limiting: a fixed window counted in Redis.

Each request of a user increments the counter of the current window
(:func:`bulkjobs.keys.rate_limit`, window number = ``now // window``) and renews its expiry, in
one pipelined round trip.  A request beyond ``limit`` in its window is refused (the HTTP layer
answers 429 in its dialect's envelope); the counter keeps counting, so a client hammering
through the refusal does not get a fresh allowance before the window ends.  ``reset`` is the
number of whole seconds until the window ends (at least 1), as DatoCMS's ``X-RateLimit-Reset``
gives it and its client waits for.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from bulkjobs import keys


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
