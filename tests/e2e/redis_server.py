"""A ``redis-server`` of a test's own, on a free loopback port: killable, freezable and
restartable at will, with or without the data it had (never the machine's own Redis)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.e2e.conftest import LOGS, free_port, wait_for


@dataclass
class PrivateRedis:
    """A private ``redis-server``.  It never saves by itself; :meth:`save` writes a snapshot
    (``dump.rdb`` in :attr:`dir`), which the next :meth:`start` loads — the way Redis comes
    back from an older snapshot.  :meth:`restart` with ``keep_data=False`` deletes it first:
    Redis comes back empty.  With ``persistent`` it keeps an append-only file written on
    every command instead (``appendfsync always``): a SIGKILL loses nothing."""

    port: int = field(default_factory=free_port)
    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="redis-")))
    popen: subprocess.Popen[bytes] | None = None
    persistent: bool = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_connect_timeout=1)

    def start(self) -> None:
        LOGS.mkdir(parents=True, exist_ok=True)
        log = (LOGS / f"redis-{self.port}-{time.time_ns()}.log").open("wb")
        aof = ["yes", "--appendfsync", "always"] if self.persistent else ["no"]
        self.popen = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", *aof, "--daemonize", "no", "--dir", str(self.dir),
             "--dbfilename", "dump.rdb"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        client = self.client()
        wait_for(lambda: client.ping(), f"redis-server on {self.port}")

    def save(self) -> None:
        """Write a snapshot of everything now (``SAVE``)."""
        self.client().save()

    def restart(self, *, keep_data: bool) -> None:
        """SIGKILL and start again on the same port: with the last :meth:`save`'s data, or
        with nothing."""
        self.kill()
        if not keep_data:
            (self.dir / "dump.rdb").unlink(missing_ok=True)
        self.start()

    def freeze(self) -> None:
        """SIGSTOP: connections are still accepted by the kernel, nothing is answered."""
        assert self.popen is not None
        os.killpg(self.popen.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.popen is not None
        os.killpg(self.popen.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: gone at once, its connections reset."""
        if self.popen is not None and self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGCONT)  # a frozen one too
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)


@contextlib.contextmanager
def private_redis_server(*, persistent: bool = False) -> Iterator[PrivateRedis]:
    """A started :class:`PrivateRedis`, killed on the way out (a fixture's body)."""
    server = PrivateRedis(persistent=persistent)
    server.start()
    try:
        yield server
    finally:
        server.kill()
