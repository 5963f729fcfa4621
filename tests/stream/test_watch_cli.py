"""``bulkjobs watch`` when the stream cannot be followed: a clean message and a non-zero exit
status, not a traceback (typer's CliRunner, a real stream server in a thread)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.e2e.conftest import free_port
from tests.stream.conftest import make_user
from tests.stream.threaded import ThreadedServer

pytestmark = pytest.mark.services


def cli(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def queued(seeded) -> str:  # type: ignore[no-untyped-def]
    """The token of a queued job of the first seeded project (no worker takes it here)."""
    project = seeded.projects[0]
    result = cli("submit", "bulk_delete_records", "--project", project.gid,
                 "--selection", json.dumps([project.heads[0]]))
    assert result.exit_code == 0, result.output
    return str(result.stdout.strip())


def test_watch_refused_by_the_stream_exits_3_without_a_traceback(queued):
    """Watching as a user who may not see the job's project: the stream's 403 is reported in
    one line and the exit status is 3."""
    outsider = f"outsider-{make_user()[:8]}"
    with ThreadedServer() as server:
        result = cli("watch", queued, "--username", outsider, "--stream-url", server.url)
    assert result.exit_code == 3, result.output
    assert isinstance(result.exception, SystemExit)
    assert "refused to follow job" in result.output and "(403)" in result.output
    assert "Traceback" not in result.output


def test_watch_without_a_stream_server_exits_3_without_a_traceback(queued):
    """Nothing listens at the stream URL: one line saying so, exit status 3."""
    url = f"ws://127.0.0.1:{free_port()}/sync"
    result = cli("watch", queued, "--stream-url", url)
    assert result.exit_code == 3, result.output
    assert isinstance(result.exception, SystemExit)
    assert f"cannot reach the stream at {url}" in result.output
    assert "Traceback" not in result.output
