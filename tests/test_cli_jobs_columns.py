"""``bulkjobs jobs list`` reads job rows without their selection (``params``), actor and
result payload."""

from __future__ import annotations

from models.engine import get_engine
from models.seed import SeedResult
from tests.api.test_jobs_list_columns import add_huge_job, heavy_selects
from tests.plans import captured
from tests.test_cli import cli


def test_jobs_list_does_not_select_params(seeded: SeedResult):
    """The listing names the job with 200,000 gids and selects none of the heavy columns."""
    token = add_huge_job(seeded.projects[0].gid)
    with captured(get_engine()) as cap:
        result = cli("jobs", "list")
    assert result.exit_code == 0, result.output
    assert token in result.stdout
    assert any("FROM job" in sql for sql, _ in cap.statements)
    assert heavy_selects(cap.statements) == []
