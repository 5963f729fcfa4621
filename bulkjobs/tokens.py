"""JWTs, API keys and password hashes.

* JWTs are HS256, signed with ``JWT_SECRET``; the algorithm list is pinned, so tokens with
  ``alg: none`` or another algorithm are rejected.  Claims: ``sub`` (user gid), ``iat``,
  ``exp``, and ``ops`` for ops users.
* Passwords are hashed with scrypt (a deliberately slow, memory-hard hash) and a per-user salt.
* API keys are 256-bit random strings; only their SHA-256 digest is stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from functools import lru_cache

import jwt

from bulkjobs.errors import Unauthorized
from bulkjobs.settings import get_settings

ALGORITHM = "HS256"
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}


@dataclass(frozen=True, slots=True)
class Claims:
    user: str
    ops: bool
    exp: float


def issue(user_gid: str, *, ops: bool = False, ttl: int | None = None) -> str:
    settings = get_settings()
    return _issue(user_gid, ops, ttl or settings.jwt_ttl, int(time.time()),
                  settings.effective_jwt_secret)


@lru_cache(maxsize=1024)
def _issue(user_gid: str, ops: bool, ttl: int, now: int, secret: str) -> str:
    # Tokens of one user issued within the same second are the same token: every answer
    # carries a renewed JWT, and a busy client gets one signature a second, not one per call.
    payload = {"sub": user_gid, "iat": now, "exp": now + ttl, "ops": ops}
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


def verify(token: str) -> Claims:
    """Decode a JWT or raise :class:`Unauthorized` (forged, expired, ``alg: none`` …).

    A token that verified once is remembered (its signature and claims do not change), so a
    client sending the same JWT again costs a lookup and the expiry check."""
    claims = _verified(token, get_settings().effective_jwt_secret)
    if claims.exp <= time.time():
        raise Unauthorized("JWT expired")
    return claims


@lru_cache(maxsize=4096)
def _verified(token: str, secret: str) -> Claims:
    try:
        payload = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["sub", "exp"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("JWT expired") from exc
    except jwt.PyJWTError as exc:
        raise Unauthorized("Invalid JWT") from exc
    sub = payload.get("sub")
    if not isinstance(sub, str):
        raise Unauthorized("Invalid JWT")
    return Claims(user=sub, ops=bool(payload.get("ops")), exp=float(payload["exp"]))


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return "scrypt$" + base64.b64encode(salt).decode() + "$" + base64.b64encode(digest).decode()


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, salt_b64, digest_b64 = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    digest = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt_b64), **_SCRYPT)
    return hmac.compare_digest(digest, base64.b64decode(digest_b64))


def new_api_key() -> str:
    return secrets.token_urlsafe(32)


def api_key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
