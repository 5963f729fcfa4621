"""Job parameters have a size cap on their stored JSON (``MAX_PARAMS_BYTES``): the largest
documented selection — 100,000 plain gids and 10,000 entries — is queued, while a body under
the 10 MB request cap whose stored JSON would exceed the cap (non-ASCII text is stored
escaped, several times larger) is refused with 413 in the Unicat envelope and nothing is
queued.  (DatoCMS and Plone queue jobs only with parameters the server builds: a version
and one gid.)"""

from __future__ import annotations

import json
import uuid
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.bodylimit import MAX_BODY
from models import Job
from models.engine import get_engine
from models.seed import SeedResult
from tests.security.conftest import call, jwt_of
from worker.submit import MAX_PARAMS_BYTES


def _jobs() -> int:
    with get_engine().connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Job)).scalar_one())


def _bulk_delete(client: TestClient, seeded: SeedResult, selection: list[Any]) -> Any:
    body = json.dumps({"selection": selection}, ensure_ascii=False).encode()
    assert len(body) < MAX_BODY  # the request cap is not what answers
    return call(client, f"/api/p/{seeded.projects[0].gid}/records/bulk/delete",
                jwt_of(seeded), content=body, headers={"Content-Type": "application/json"})


def test_the_largest_documented_selection_is_queued(client: TestClient, seeded: SeedResult):
    """100,000 plain gids plus 10,000 children entries (each with an exclude) fit the cap
    and are queued."""
    selection: list[Any] = [str(uuid.uuid4()) for _ in range(100_000)]
    selection += [{"children": str(uuid.uuid4()), "exclude": [str(uuid.uuid4())]}
                  for _ in range(10_000)]
    before = _jobs()
    r = _bulk_delete(client, seeded, selection)
    assert r.status_code == 200, r.text[:300]
    assert r.json()["result"]["job.token"]
    assert _jobs() == before + 1


def test_params_over_the_cap_are_413_and_nothing_is_queued(client: TestClient,
                                                           seeded: SeedResult):
    """A valid selection of 10,000 search entries whose non-ASCII queries take some 6 MB in
    the body but over 8 MiB stored is refused with 413, its size and the limit in the
    Unicat envelope; no job row is written."""
    selection = [{"search": {"language": "en", "q": "é" * 300}} for _ in range(10_000)]
    stored = len(json.dumps({"selection": selection}))
    assert stored > MAX_PARAMS_BYTES
    before = _jobs()
    r = _bulk_delete(client, seeded, selection)
    assert r.status_code == 413, r.text[:300]
    body = r.json()
    assert body["success"] is False and body["result"]["code"] == 413
    assert body["result"]["info"] == {"size": stored, "limit": MAX_PARAMS_BYTES}
    assert _jobs() == before
