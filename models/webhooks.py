"""Webhooks: where a project's job states are sent (``webhooks/create|list|delete``).

A webhook is a URL, the events it wants (:data:`EVENTS`) and a secret that signs each
delivery (HMAC-SHA256 of the body).  The secret is stored as given, because signing needs
it, and never listed back (:meth:`Webhook.public`).

Only ``http``/``https`` URLs are taken, and the host must resolve to public addresses only:
loopback, private, link-local, multicast, reserved and unspecified addresses are refused
(:func:`check_url`), so a project owner cannot make the workers call into the deployment's
own network — unless ``WEBHOOKS_ALLOW_PRIVATE=true`` (a receiver on the same host or LAN).
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

from sqlalchemy import JSON, Column, func, select
from sqlmodel import Field, Session, SQLModel, col

from bulkjobs.errors import NotFound, Unprocessable
from models.engine import begin_writing

#: The job events a webhook may ask for: a job started (once), finished, failed or cancelled.
EVENTS = ("job.processing", "job.done", "job.rejected")
#: The most webhooks one project may have.
MAX_PER_PROJECT = 20
MAX_URL = 2048
MIN_SECRET, MAX_SECRET = 16, 256

Resolver = Callable[[str, int], Sequence[str]]


class Webhook(SQLModel, table=True):
    gid: str = Field(primary_key=True, max_length=36)
    project_gid: str = Field(foreign_key="project.gid", max_length=36, index=True)
    url: str = Field(max_length=MAX_URL)
    events: list[str] = Field(sa_column=Column(JSON, nullable=False))
    secret: str = Field(max_length=MAX_SECRET)
    created_by: str = Field(max_length=36)
    created_on: float

    def public(self) -> dict[str, Any]:
        """What ``webhooks/list`` shows: everything but the secret."""
        return {"gid": self.gid, "url": self.url, "events": list(self.events),
                "created_by": self.created_by, "created_on": self.created_on}


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (an IP literal resolves to itself), in the
    resolver's order of preference."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise Unprocessable("The webhook's host does not resolve", info={"host": host}) from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
                or ip.is_reserved or ip.is_unspecified)


@dataclass(frozen=True)
class Target:
    """Where one delivery attempt goes: the URL's parts and the addresses its host resolved
    to, every one of them checked; the attempt connects to these, never to the name again."""

    scheme: str
    host: str
    port: int
    path: str  # with its query
    addresses: tuple[str, ...]


def _parts(url: str) -> tuple[SplitResult, int]:
    """The URL's parts and port, or 422 for a URL no delivery may go to (whatever its host
    resolves to)."""
    if len(url) > MAX_URL:
        raise Unprocessable(f"The webhook's URL is longer than {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise Unprocessable("The webhook's URL does not parse", info={"url": url}) from exc
    if parts.scheme not in ("http", "https"):
        raise Unprocessable("A webhook's URL must be http or https", info={"url": url})
    if not parts.hostname:
        raise Unprocessable("The webhook's URL has no host", info={"url": url})
    if parts.username is not None or parts.password is not None:
        raise Unprocessable("A webhook's URL may not carry credentials; sign with the secret")
    return parts, port


def _check_addresses(host: str, addresses: Sequence[str]) -> None:
    refused = [a for a in addresses if not _public(a)]
    if refused:
        raise Unprocessable("The webhook's host is a private, loopback or link-local address "
                            "(allowed only with WEBHOOKS_ALLOW_PRIVATE=true)",
                            info={"host": host, "addresses": refused})


def check_url(url: str, *, allow_private: bool, resolver: Resolver = resolve) -> None:
    """Refuse (422) a URL the workers must not call: not ``http``/``https``, without a host,
    with credentials in it, or (unless ``allow_private``) with a host that resolves to any
    address that is not public.  Called when a webhook is made; each delivery attempt
    checks again, through :func:`target`, as a name may resolve elsewhere later."""
    parts, port = _parts(url)
    if not allow_private:
        _check_addresses(parts.hostname or "", resolver(parts.hostname or "", port))


def target(url: str, *, allow_private: bool, resolver: Resolver = resolve) -> Target:
    """The URL's host resolved once, and every address checked as :func:`check_url` does
    (422 for a URL or an address it refuses, or a host that does not resolve).  Connecting
    to these addresses, not to the name, is what keeps a name that resolves to a public
    address for the check and to a private one a moment later (DNS rebinding) out."""
    parts, port = _parts(url)
    host = parts.hostname or ""
    addresses = list(resolver(host, port))
    if not addresses:
        raise Unprocessable("The webhook's host does not resolve", info={"host": host})
    if not allow_private:
        _check_addresses(host, addresses)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(scheme=parts.scheme, host=host, port=port, path=path,
                  addresses=tuple(addresses))


def check_events(events: Sequence[str]) -> list[str]:
    """The events, each once, in :data:`EVENTS` order; 422 for none or an unknown one."""
    unknown = sorted(set(events) - set(EVENTS))
    if unknown:
        raise Unprocessable(f"Unknown webhook event {unknown[0]!r}; the events are "
                            f"{', '.join(EVENTS)}", info={"events": unknown})
    if not events:
        raise Unprocessable(f"A webhook needs at least one event of {', '.join(EVENTS)}")
    return [e for e in EVENTS if e in events]


def create(session: Session, *, project_gid: str, url: str, events: Sequence[str],
           secret: str, user_gid: str, allow_private: bool,
           resolver: Resolver = resolve) -> Webhook:
    """A new webhook of the project (committed); 422 for a URL, events or secret it refuses,
    or a project that has :data:`MAX_PER_PROJECT` already."""
    if not MIN_SECRET <= len(secret) <= MAX_SECRET:
        raise Unprocessable(f"A webhook's secret is {MIN_SECRET} to {MAX_SECRET} characters")
    wanted = check_events(events)
    check_url(url, allow_private=allow_private, resolver=resolver)
    begin_writing(session)  # the count and the insert in one write transaction
    count = session.execute(select(func.count()).select_from(Webhook)
                            .where(col(Webhook.project_gid) == project_gid)).scalar_one()
    if count >= MAX_PER_PROJECT:
        raise Unprocessable(f"A project has at most {MAX_PER_PROJECT} webhooks")
    hook = Webhook(gid=secrets.token_hex(16), project_gid=project_gid, url=url, events=wanted,
                   secret=secret, created_by=user_gid, created_on=time.time())
    session.add(hook)
    session.commit()
    return hook


def listed(session: Session, *, project_gid: str) -> list[Webhook]:
    """The project's webhooks, oldest first."""
    return list(session.execute(
        select(Webhook).where(col(Webhook.project_gid) == project_gid)
        .order_by(col(Webhook.created_on), col(Webhook.gid))).scalars())


def remove(session: Session, *, project_gid: str, gid: str) -> None:
    """Delete one of the project's webhooks (committed); 404 for another project's or none."""
    begin_writing(session)
    hook = session.get(Webhook, gid)
    if hook is None or hook.project_gid != project_gid:
        raise NotFound("No such webhook", info={"webhook": gid})
    session.delete(hook)
    session.commit()
