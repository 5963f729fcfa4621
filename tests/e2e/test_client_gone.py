"""A client that closes its connection before its request's body has arrived is no error of
the server's: the web (the Procfile's command) logs it as one line, answers nobody, and goes
on serving — no traceback, no 500."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import Engine

from bulkjobs import tokens
from models.engine import get_write_engine
from models.seed import SeedResult, seed
from tests.e2e import procfile
from tests.e2e.conftest import Proc, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def web(schema: Engine) -> Iterator[tuple[Proc, str]]:
    with procfile.serving_web() as served:
        yield served


@pytest.fixture
def seeded(services: Engine) -> SeedResult:
    with get_write_engine().begin() as conn:
        return seed(conn, records=31, projects=1, seed_value=7)


def test_a_client_gone_before_its_body_arrived_is_one_line_not_an_error(
        web: tuple[Proc, str], seeded: SeedResult) -> None:
    proc, base = web
    port = int(base.rsplit(":", 1)[1])
    project = seeded.projects[0]
    member = next(u.gid for u in seeded.users if u.username.startswith("member"))
    head = (f"POST /api/p/{project.gid}/records/bulk/delete HTTP/1.1\r\n"
            f"Host: 127.0.0.1\r\nAuthorization: Bearer {tokens.issue(member)}\r\n"
            "Content-Type: application/json\r\nContent-Length: 200\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(head.encode() + b'{"selection": [')  # 15 of the 200 bytes announced
        time.sleep(0.5)  # the route is waiting for the rest of the body
    wait_for(lambda: "client went away" in proc.output() or "Traceback" in proc.output(),
             "the web's word on it", timeout=30)
    assert httpx.get(f"{base}/livez", timeout=10).status_code == 200
    output = proc.output()
    assert "Traceback" not in output and "unexpected error" not in output, output[-3000:]
