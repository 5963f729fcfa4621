"""One webhook delivery attempt over HTTP(S), with a deadline for all of it.

``WEBHOOK_TIMEOUT`` bounds the whole attempt: the host's lookup, connecting, the TLS
handshake, sending the request, and reading the answer's status, headers and up to
:data:`MAX_BODY` of its body.  A socket time-out alone applies to each read, so a receiver
that drips its answer one byte at a time would hold an attempt as long as it liked; here
every blocking step is given only the time left (:class:`Deadline`), and each read checks
it first.

The host is resolved once per attempt and every address checked
(:func:`models.webhooks.target`); the connection goes to those addresses, never to the name
again, so a name that resolves elsewhere between the check and the connection (DNS
rebinding) gets nowhere.  The ``Host`` header still names the URL's host, and for ``https``
the certificate is verified for that name, which is also the one sent by SNI.  Redirects are
the receiver's answer, not followed.
"""

from __future__ import annotations

import http.client
import io
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from bulkjobs.errors import BulkJobsError
from models.webhooks import Resolver, Target, resolve, target

#: The most of an answer's body that is read (and dropped).
MAX_BODY = 65_536

# Lookups run here so that one the system's resolver holds up still ends by the deadline;
# a lookup given up on finishes in its thread and its answer is dropped.
_lookups = ThreadPoolExecutor(max_workers=32, thread_name_prefix="webhook-lookup")


@dataclass(frozen=True)
class Answer:
    """What one attempt got: the receiver's status code (``None`` when none came) and an
    error text for anything but a 2xx answer read in time."""

    status_code: int | None
    error: str | None


class Deadline:
    """The monotonic end of one attempt."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def left(self) -> float:
        """Seconds left; :class:`TimeoutError` once there are none."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"timed out: the attempt took over {self.seconds:g} s")
        return left


class _Reader(io.RawIOBase):
    """The socket's reads for http.client, each waiting no longer than the time left."""

    def __init__(self, sock: socket.socket, deadline: Deadline) -> None:
        super().__init__()
        self._sock, self._deadline = sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self._sock.settimeout(self._deadline.left())
        return self._sock.recv_into(buffer)


class _Socket:
    """A connected socket as http.client uses it (``sendall``, ``makefile``, ``close``),
    every send and read under the deadline."""

    def __init__(self, sock: socket.socket, deadline: Deadline) -> None:
        self._sock, self._deadline = sock, deadline

    def sendall(self, data: bytes) -> None:
        self._sock.settimeout(self._deadline.left())
        self._sock.sendall(data)  # the time-out bounds the whole sendall (Python ≥ 3.5)

    def makefile(self, *args: object, **kwargs: object) -> io.BufferedReader:
        return io.BufferedReader(_Reader(self._sock, self._deadline))

    def close(self) -> None:
        self._sock.close()


def _connect(where: Target, deadline: Deadline) -> socket.socket:
    """A socket connected to the first of the checked addresses that takes it (TLS on top
    for ``https``, verified for the URL's host)."""
    failed: list[str] = []
    for address in where.addresses:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(deadline.left())
            sock.connect((address, where.port))
            if where.scheme == "https":
                sock.settimeout(deadline.left())  # the handshake's time in all
                sock = ssl.create_default_context().wrap_socket(sock,
                                                                server_hostname=where.host)
            return sock
        except TimeoutError:
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            failed.append(f"{address}: {exc}")
    raise ConnectionError(f"connecting to port {where.port} failed ({'; '.join(failed)})")


class _Connection(http.client.HTTPConnection):
    """An HTTP connection to the checked addresses of a :class:`Target`, named for its
    host (``Host`` header, SNI), under the deadline."""

    def __init__(self, where: Target, deadline: Deadline) -> None:
        super().__init__(where.host, where.port)
        self.default_port = 443 if where.scheme == "https" else 80  # Host: without it
        self._where, self._deadline = where, deadline

    def connect(self) -> None:
        self.sock = _Socket(_connect(self._where, self._deadline), self._deadline)


def _lookup(resolver: Resolver, deadline: Deadline) -> Resolver:
    def bounded(host: str, port: int) -> list[str]:
        return list(_lookups.submit(resolver, host, port).result(timeout=deadline.left()))
    return bounded


def post(url: str, body: bytes, headers: dict[str, str], *, timeout: float,
         allow_private: bool, resolver: Resolver = resolve) -> Answer:
    """Send one attempt, all of it within ``timeout`` seconds, to the addresses the URL's
    host resolves to now, each checked as :func:`models.webhooks.check_url` does (unless
    ``allow_private``)."""
    deadline = Deadline(timeout)
    code: int | None = None
    conn: _Connection | None = None
    try:
        where = target(url, allow_private=allow_private, resolver=_lookup(resolver, deadline))
        conn = _Connection(where, deadline)
        conn.request("POST", where.path, body=body, headers={
            "Content-Type": "application/json", "User-Agent": "bulkjobs-webhooks",
            "Connection": "close", **headers})
        answer = conn.getresponse()
        code = answer.status
        answer.read(MAX_BODY)
    except BulkJobsError as exc:
        return Answer(None, exc.message)
    except TimeoutError:
        return Answer(code, f"timed out: the attempt took over {timeout:g} s")
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return Answer(code, f"{type(exc).__name__}: {exc}")
    finally:
        if conn is not None:
            conn.close()
    return Answer(code, None if 200 <= code < 300 else f"HTTP {code}")
