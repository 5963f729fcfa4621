"""Several ``beat`` processes, started from the Procfile's command: one sends the periodic
tasks (the holder of the Redis lease, ``worker.beat``), and when it is killed another takes
over."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.e2e import procfile
from tests.e2e.conftest import Proc, wait_for
from worker.beat import Lease

pytestmark = [pytest.mark.e2e, pytest.mark.services]

SENT = re.compile(r"Scheduler: Sending due task reap-stalled-jobs")
#: A reaper every second and a lease of two: a takeover within seconds.
FAST = {"REAPER_INTERVAL": "1", "BEAT_LEASE_TTL": "2"}


def sends(proc: Proc) -> int:
    """How many reaper messages ``proc`` sent, from its log."""
    return len(SENT.findall(proc.output()))


@dataclass
class Beats:
    """Beat processes on a Redis prefix of their own (their messages pile up in a maintenance
    queue that no worker of the session reads)."""

    prefix: str
    procs: list[Proc] = field(default_factory=list)

    def start(self, name: str) -> Proc:
        proc = procfile.start("beat", name, REDIS_PREFIX=self.prefix, **FAST)
        self.procs.append(proc)
        wait_for(lambda: "beat: Starting..." in proc.output(), f"beat {name}", timeout=60)
        return proc


@pytest.fixture
def beats(redis_client) -> Iterator[Beats]:  # type: ignore[no-untyped-def]
    """Beats started by the test; stopped, and their keys removed, after it."""
    started = Beats(f"{os.environ['REDIS_PREFIX']}-beat{os.getpid()}")
    try:
        yield started
    finally:
        procfile.stop_all(started.procs)
        for pattern in (f"{started.prefix}*", f"_kombu.binding*.{started.prefix}*"):
            for key in redis_client.scan_iter(pattern):
                redis_client.delete(key)


@pytest.mark.heavy
@pytest.mark.timeout(180)
def test_of_two_beats_one_sends_and_the_other_takes_over_when_it_is_killed(
    beats: Beats,
) -> None:
    """Two beats on one schedule: only one sends the reaper; SIGKILL it (no clean release)
    and the other starts sending."""
    first = beats.start("beat-a")
    wait_for(lambda: sends(first) >= 1, "the first beat sends", timeout=60)
    second = beats.start("beat-b")
    before = sends(first)
    wait_for(lambda: sends(first) >= before + 5, "five more sends while both run", timeout=60)
    assert sends(second) == 0, second.output()

    assert first.popen is not None
    os.killpg(first.popen.pid, signal.SIGKILL)
    first.popen.wait(15)
    wait_for(lambda: sends(second) >= 2, "the second beat takes over", timeout=60)
    assert "holds the lease" in second.output()


@pytest.mark.timeout(120)
def test_a_beat_stopped_cleanly_hands_over_and_the_schedule_file_is_not_shared(
    beats: Beats,
) -> None:
    """A beat stopped with SIGTERM releases its lease (logged) and the other beat sends;
    neither writes a ``celerybeat-schedule`` file in the shared ``DATA_DIR``."""
    first = beats.start("beat-c")
    wait_for(lambda: sends(first) >= 1, "the first beat sends", timeout=60)
    second = beats.start("beat-d")
    first.stop(signal.SIGTERM)
    assert "released the lease" in first.output()
    wait_for(lambda: sends(second) >= 1, "the second beat takes over", timeout=60)
    data = os.environ["DATA_DIR"]
    assert not [n for n in os.listdir(data) if n.startswith("celerybeat-schedule")]


def test_the_lease_is_held_by_one_owner_renewed_only_by_it_and_released_only_by_it(
    redis_client,  # type: ignore[no-untyped-def]
) -> None:
    """Two leases on one key: the second does not get it while the first holds it; the first
    renews it (a third of the TTL later); after the first released it the second takes it,
    and the first can neither renew nor release it any more."""
    key = f"{os.environ['REDIS_PREFIX']}-lease{os.getpid()}"
    first, second = (Lease(redis_client, key, name, ttl=30) for name in ("one", "two"))
    try:
        assert first.hold() and not second.hold()
        first.checked -= first.every  # due for renewal
        assert first.hold() and redis_client.get(key) == b"one"
        first.release()
        assert redis_client.get(key) is None
        assert second.hold() and redis_client.get(key) == b"two"
        first.held, first.checked = True, 0.0  # thinks it still holds it, renewal due
        assert not first.hold()
        first.held = True
        first.release()
        assert redis_client.get(key) == b"two"
    finally:
        redis_client.delete(key)
