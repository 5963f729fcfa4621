"""A request that needs Redis while Redis does not answer (down, or no primary yet during a
Sentinel failover) is a 503 in the dialect's envelope that says when to come back
(``Retry-After``), never a 500."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from bulkjobs import connections
from models.seed import SeededProject


@pytest.mark.parametrize("path", ["/sync/cursors", "/api/p/{project}/records/bulk/delete"])
def test_redis_unavailable_is_503_with_retry_after(client: TestClient, project: SeededProject,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  path: str) -> None:
    """While every Redis command fails at once (the process-wide outage memory tripped),
    reading cursors and queueing a job both answer 503 with ``Retry-After``."""
    jwt = client.post(f"/api/p/{project.gid}/auth",
                      json={"api_key": project.api_key}).headers["authorization"]
    monkeypatch.setattr(connections.OUTAGE, "until", time.monotonic() + 3600)
    r = client.post(path.format(project=project.gid), json={"selection": [project.heads[0]]},
                    headers={"Authorization": f"Bearer {jwt}"})
    assert r.status_code == 503, r.text
    assert r.json()["success"] is False
    assert int(r.headers["Retry-After"]) >= 1
