"""JWTs, API keys and password hashes.

* JWTs are HS256, signed with ``JWT_SECRET``; the algorithm list is pinned, so tokens with
  ``alg: none`` or another algorithm are rejected.  Claims: ``sub`` (user gid), ``iat``,
  ``exp``, ``jti`` (the token's id), ``auth_time`` (the login the session started with; a
  renewed token keeps it, and no token outlives it by more than ``SESSION_MAX_AGE``),
  ``ver`` (the user's token version at that login), ``ops`` (what the user row said when
  the token was issued: informative only, authority is read from the database on every
  request, see :mod:`models.accounts`), and for a token made from an API key ``prj`` (the
  one project it opens) and ``kid`` (the key's public id).
* Passwords are hashed with scrypt (a deliberately slow, memory-hard hash) and a per-user salt.
* API keys are 256-bit random strings; only their SHA-256 digest is stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache

import jwt

from bulkjobs.errors import Unauthorized
from bulkjobs.settings import get_settings

ALGORITHM = "HS256"
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}


@dataclass(frozen=True, slots=True)
class Claims:
    """A token's claims.  ``ops`` is what the token says until
    :func:`models.accounts.authorize` (or a membership check) has replaced it by what the
    user row says now; nothing grants ops access on the token's word."""

    user: str
    ops: bool
    exp: float
    auth_time: float = 0.0
    ver: int = 0
    prj: str | None = None
    kid: str | None = None


def issue(user_gid: str, *, ops: bool = False, ttl: int | None = None,
          auth_time: float | None = None, ver: int = 0, prj: str | None = None,
          kid: str | None = None) -> str:
    """A JWT for a user.  Without ``auth_time`` it starts a session (a login); with it, it
    continues that session and expires with it at the latest."""
    settings = get_settings()
    now = int(time.time())
    start = now if auth_time is None else int(auth_time)
    exp = min(now + (ttl or settings.jwt_ttl), start + settings.session_max_age)
    return _issue(user_gid, ops, now, exp, start, ver, prj, kid, settings.effective_jwt_secret)


def renew(claims: Claims) -> str:
    """The JWT every successful answer carries: the same session (login time, version, API
    key), with ``ops`` as in ``claims`` — pass claims checked against the database."""
    return issue(claims.user, ops=claims.ops, auth_time=claims.auth_time, ver=claims.ver,
                 prj=claims.prj, kid=claims.kid)


@lru_cache(maxsize=1024)
def _issue(user_gid: str, ops: bool, now: int, exp: int, auth_time: int, ver: int,
           prj: str | None, kid: str | None, secret: str) -> str:
    # Tokens of one session issued within the same second are the same token: every answer
    # carries a renewed JWT, and a busy client gets one signature a second, not one per call.
    payload: dict[str, object] = {"sub": user_gid, "iat": now, "exp": exp, "ops": ops,
                                  "jti": uuid.uuid4().hex, "auth_time": auth_time, "ver": ver}
    if prj is not None:
        payload["prj"] = prj
    if kid is not None:
        payload["kid"] = kid
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


def verify(token: str) -> Claims:
    """Decode a JWT or raise :class:`Unauthorized` (forged, expired, ``alg: none``, a session
    older than ``SESSION_MAX_AGE`` …).  Whether its user may still use it is the database's
    to say (:func:`models.accounts.authorize`), on every request.

    A token that verified once is remembered (its signature and claims do not change), so a
    client sending the same JWT again costs a lookup and the expiry checks."""
    settings = get_settings()
    claims = _verified(token, settings.effective_jwt_secret)
    now = time.time()
    if claims.exp <= now:
        raise Unauthorized("JWT expired")
    if claims.auth_time + settings.session_max_age <= now:
        raise Unauthorized("Session expired; log in again")
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
    # A token from before sessions had a login time started its session when it was issued.
    auth_time = payload.get("auth_time", payload.get("iat"))
    ver = payload.get("ver", 0)
    prj, kid = payload.get("prj"), payload.get("kid")
    if (not isinstance(sub, str) or not isinstance(auth_time, int | float)
            or isinstance(auth_time, bool) or type(ver) is not int
            or not isinstance(prj, str | None) or not isinstance(kid, str | None)
            or (prj is None) != (kid is None)):
        raise Unauthorized("Invalid JWT")
    return Claims(user=sub, ops=bool(payload.get("ops")), exp=float(payload["exp"]),
                  auth_time=float(auth_time), ver=ver, prj=prj, kid=kid)


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
