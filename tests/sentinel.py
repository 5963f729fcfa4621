"""A Redis Sentinel deployment of a test's own, on free loopback ports: one primary, two
replicas (``--replicaof``) and three sentinels (``redis-server <conf> --sentinel``, each with
a writable config file in a temporary directory), quorum 2, tuned to fail over within a few
seconds.  :meth:`SentinelCluster.kill_primary` SIGKILLs the primary;
:meth:`SentinelCluster.wait_failover` waits until the sentinels name another one that
answers as a primary."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis

#: The master's name the sentinels monitor.
MASTER = "bulkjobs-test"
#: Sentinel timings (milliseconds), those README.md ("Redis Sentinel") recommends: a primary
#: silent this long is down (shorter, a busy machine's new primary, slow to answer while it
#: feeds its replicas, is taken down in turn); a failover that has not completed in
#: FAILOVER_TIMEOUT is ended (its replicas reconfigured anyway).
DOWN_AFTER_MS = 3000
FAILOVER_TIMEOUT_MS = 10000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(check, what: str, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what} not reached in {timeout} s")


@dataclass
class Server:
    """One ``redis-server`` process (a data node or a sentinel)."""

    port: int
    args: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    password: str | None = None  # set once the server asks for one (``requirepass``)

    def start(self) -> None:
        with self.log.open("ab") as fh:
            self.popen = subprocess.Popen(["redis-server", *self.args], stdout=fh,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        client = self.client()
        _wait(client.ping, f"redis-server on {self.port}", 30)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, password=self.password, socket_connect_timeout=1,
                           socket_timeout=2)

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)


@dataclass
class SentinelCluster:
    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sentinel-")))
    nodes: list[Server] = field(default_factory=list)  # nodes[0] starts as the primary
    sentinels: list[Server] = field(default_factory=list)

    @property
    def addresses(self) -> str:
        """``REDIS_SENTINELS``'s value."""
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def start(self, replicas: int = 2, sentinels: int = 3) -> None:
        primary = free_port()
        for n in range(1 + replicas):
            port = primary if n == 0 else free_port()
            data = self.dir / f"node-{port}"
            data.mkdir()
            args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                    "no", "--dir", str(data), "--daemonize", "no",
                    "--repl-diskless-sync-delay", "0"]
            if n:
                args += ["--replicaof", "127.0.0.1", str(primary)]
            node = Server(port, args, self.dir / f"node-{port}.log")
            node.start()
            self.nodes.append(node)
        _wait(lambda: self._online(replicas), "replicas in sync", 30)
        for _ in range(sentinels):
            port = free_port()
            conf = self.dir / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {primary} 2\n"
                f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {MASTER} 1\n")
            sentinel = Server(port, [str(conf), "--sentinel"], self.dir / f"sentinel-{port}.log")
            sentinel.start()
            self.sentinels.append(sentinel)
        # Every sentinel sees the replicas and the other sentinels (a failover needs them).
        _wait(lambda: all(
            int(s.client().sentinel_master(MASTER)["num-other-sentinels"]) == sentinels - 1
            and int(s.client().sentinel_master(MASTER)["num-slaves"]) == replicas
            for s in self.sentinels), "sentinels acquainted", 60)

    def _online(self, replicas: int) -> bool:
        """Whether the primary has ``replicas`` replicas past their first sync (``WAIT`` counts
        only those)."""
        info = self.nodes[0].client().info("replication")
        return info["connected_slaves"] == replicas and all(
            info[f"slave{i}"]["state"] == "online" for i in range(replicas))

    def primary_port(self) -> int:
        """The primary's port, as the first sentinel that answers names it."""
        for s in self.sentinels:
            with contextlib.suppress(redis.RedisError):
                host, port = s.client().sentinel_get_master_addr_by_name(MASTER)
                return int(port)
        raise redis.ConnectionError("no sentinel answers")

    def node(self, port: int) -> Server:
        return next(n for n in self.nodes if n.port == port)

    def kill_primary(self) -> int:
        """SIGKILL the current primary; its port."""
        port = self.primary_port()
        self.node(port).kill()
        return port

    def wait_failover(self, old: int, timeout: float = 60) -> int:
        """Wait until every sentinel names a primary other than ``old``, none is still failing
        over, and it answers as a primary; its port."""
        def done() -> bool:
            ports = {int(s.client().sentinel_get_master_addr_by_name(MASTER)[1])
                     for s in self.sentinels}
            if len(ports) != 1 or old in ports:
                return False
            if any("failover" in str(s.client().sentinel_master(MASTER).get("flags", ""))
                   for s in self.sentinels):
                return False
            return self.node(ports.pop()).client().info("replication")["role"] == "master"
        _wait(done, "failover", timeout)
        return self.primary_port()

    def stop(self) -> None:
        for server in [*self.sentinels, *self.nodes]:
            server.kill()


@contextlib.contextmanager
def sentinel_cluster() -> Iterator[SentinelCluster]:
    """A started :class:`SentinelCluster`, killed on the way out (a fixture's body)."""
    cluster = SentinelCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
