"""Plone's ``PATCH @history`` against a real web process, with the real worker of the
``system`` fixture running the revert job: the request waits for the job and answers 200
with Plone's message, and the record's history has grown by the revert."""

from __future__ import annotations

import httpx
import pytest

from models.seed import SeedResult
from tests.api.dialects import history_record, versions_of
from tests.e2e.conftest import System

pytestmark = [pytest.mark.services, pytest.mark.e2e]


def test_patch_history_reverts_through_the_worker(system: System, seeded: SeedResult) -> None:
    """PATCH answers 200 "<title> has been reverted to revision 1."; version 3 now exists,
    commented "Reverted to revision 1", with version 1's content."""
    project = seeded.projects[0]
    rec = history_record(project)
    old = versions_of(rec.id)
    url = f"{system.web_url}/plone/p/{project.gid}/{rec.gid}/@history"
    headers = {"Authorization": f"Bearer {project.api_key}", "Accept": "application/json"}
    r = httpx.patch(url, json={"version": 1}, headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    title = old[1].snapshot["title"]["en"]
    assert r.json() == {"message": f"{title} has been reverted to revision 1."}
    now = versions_of(rec.id)
    assert [v.number for v in now] == [0, 1, 2, 3]
    assert now[-1].comment == "Reverted to revision 1" and now[-1].is_current
    assert now[-1].snapshot["title"] == old[1].snapshot["title"]
    history = httpx.get(url, headers=headers, timeout=30).json()
    assert history[0]["version"] == 3 and history[0]["comments"] == "Reverted to revision 1"
    assert "x-ratelimit-remaining" in r.headers
