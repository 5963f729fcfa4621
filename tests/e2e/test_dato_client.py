"""DatoCMS's official JavaScript client (``@datocms/cma-client-node``, pinned in
``tests/e2e/js/package.json``) against the DatoCMS dialect of a real web process, with the
real worker carrying the restore out: list versions, restore one through the client's own
job polling, read the restored record.  Needs Node.js; the client is installed with
``npm ci`` into ``tests/e2e/js/node_modules`` (``scripts/test.sh`` does it beforehand).
Without Node.js the test is skipped — except in CI (``CI=true``), where it fails."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import NoReturn

import pytest

from models.seed import SeedResult
from tests.api.dialects import history_record, versions_of
from tests.e2e.conftest import System

pytestmark = [pytest.mark.services, pytest.mark.e2e]

JS = Path(__file__).parent / "js"


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must run the DatoCMS client test")
    pytest.skip(reason)


def find_node() -> str:
    """The ``node`` binary, with the client installed (``npm ci`` when it is not yet)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _unavailable("Node.js is not installed")
    if not (JS / "node_modules" / "@datocms" / "cma-client-node").is_dir():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--prefix", str(JS)], check=True,
                       capture_output=True, timeout=300)
    return node


@pytest.fixture(scope="module")
def node() -> str:
    return find_node()


def test_official_client_lists_restores_and_reads(system: System, seeded: SeedResult,
                                                  node: str) -> None:
    """The client lists versions newest first (also paged), restores the oldest and gets the
    restored item from the job result, then reads the record with that content and one more
    version; its errors parse as DatoCMS errors."""
    project = seeded.projects[0]
    rec = history_record(project)
    stored = versions_of(rec.id)
    done = subprocess.run(
        [node, str(JS / "restore.js"), f"{system.web_url}/dato/p/{project.gid}",
         project.api_key, rec.gid],
        capture_output=True, text=True, timeout=120, cwd=JS)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert [v["id"] for v in out["before"]] == [v.id for v in reversed(stored)]
    assert out["paged"] == [v["id"] for v in out["before"]]
    oldest_title = stored[0].snapshot["title"]["en"]
    assert out["oldest"]["title"] == oldest_title and out["oldest"]["type"] == "item_version"
    assert out["oldest"]["item"] == {"type": "item", "id": rec.gid}
    [restored] = out["restored"]
    assert restored["id"] == rec.gid and restored["title"] == oldest_title
    assert out["item"]["title"] == oldest_title
    now = versions_of(rec.id)
    assert len(now) == len(stored) + 1 and now[-1].comment == "Restored version 0"
    assert [v["id"] for v in out["after"]] == [v.id for v in reversed(now)]
    assert out["item"]["meta"]["current_version"] == now[-1].id
    assert out["version"]["meta"]["is_current"] is True
    assert out["missing"] == {"status": 404, "codes": ["NOT_FOUND"]}


@pytest.mark.parametrize(("ci", "outcome"), [("true", pytest.fail.Exception),
                                             ("", pytest.skip.Exception),
                                             ("false", pytest.skip.Exception)])
def test_missing_node_skips_except_in_ci(monkeypatch: pytest.MonkeyPatch, ci: str,
                                         outcome: type[BaseException]) -> None:
    """Without Node.js the client test is skipped, but fails in CI (``CI=true``)."""
    monkeypatch.setenv("CI", ci)
    monkeypatch.setattr(shutil, "which", lambda _: None)
    with pytest.raises(outcome):
        find_node()
