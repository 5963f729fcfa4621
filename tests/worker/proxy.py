"""A TCP proxy in front of the test Redis that a test can take down and bring back: while it
is down every connection through it is closed and new ones are refused, as when Redis itself
goes away; the Redis behind it (and its data) stays as it was."""

from __future__ import annotations

import socket
import threading
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


class RedisProxy:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self.db = int(parts.path.strip("/") or 0)
        self.port = 0
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.up()

    def client(self) -> redis.Redis:
        """A client through the proxy that does not retry: a failure surfaces at once."""
        return redis.Redis(host="127.0.0.1", port=self.port, db=self.db, socket_timeout=3,
                           socket_connect_timeout=2, retry=Retry(NoBackoff(), 0))

    def up(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        """Close the listener and every connection: Redis is away for the proxy's clients."""
        listener, self._listener = self._listener, None
        if listener is not None:
            try:  # wakes the accept() blocked on it (a bare close() would not, on Linux)
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # closed by down()
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                if self._listener is not listener:  # down() ran meanwhile: this one too
                    client.close()
                    upstream.close()
                    return
                self._conns += [client, upstream]
            for src, dst, upward in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(src, dst, upward),
                                 daemon=True).start()

    def passing(self, data: bytes) -> None:
        """Called with what a client sends, before it goes on to Redis (nothing here; a
        subclass may hold it)."""

    def _pump(self, src: socket.socket, dst: socket.socket, upward: bool) -> None:
        try:
            while data := src.recv(65536):
                if upward:
                    self.passing(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
