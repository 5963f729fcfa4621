"""``models.history_reads.find_version``: the one rule of "version not found" that the
version jobs and both history dialects (DatoCMS, Plone) use — by number or by id, scoped to
the project (and the record when given), live records only when asked, and numbers beyond
the 32-bit column not found without a database error."""

from __future__ import annotations

from typing import Any

import pytest
from sqlmodel import Session

from bulkjobs.errors import NotFound
from models.engine import get_engine
from models.history_reads import MAX_NUMBER, find_version
from models.seed import SeedResult
from tests.worker.helpers import records, versions

pytestmark = pytest.mark.services


def setting(seeded: SeedResult) -> dict[str, Any]:
    """Project ``a``'s record with three versions, another of its records, a deleted one,
    and project ``b``."""
    a, b = seeded.projects
    recs = records(a.gid)
    rec = next(r for r in recs.values() if r.status != "deleted" and len(versions(r.id)) == 3)
    other = next(r for r in recs.values() if r.id != rec.id and r.status != "deleted")
    deleted = next(r for r in recs.values() if r.status == "deleted")
    return {"a": a.gid, "b": b.gid, "rec": rec, "other": other, "deleted": deleted}


@pytest.mark.parametrize(
    ("case", "found"),
    [
        pytest.param(lambda s: dict(project=s["a"], record_id=s["rec"].id, number=1), 1,
                     id="by-number"),
        pytest.param(lambda s: dict(project=s["a"], version_id=versions(s["rec"].id)[2].id), 2,
                     id="by-id"),
        pytest.param(lambda s: dict(project=s["a"], record_id=s["rec"].id,
                                    version_id=versions(s["rec"].id)[0].id), 0,
                     id="by-id-of-the-record"),
        pytest.param(lambda s: dict(project=s["a"], version_id=versions(s["deleted"].id)[0].id),
                     0, id="deleted-record-when-not-live"),
        pytest.param(lambda s: dict(project=s["a"], record_id=s["rec"].id, number=3), None,
                     id="number-it-lacks"),
        pytest.param(lambda s: dict(project=s["b"], version_id=versions(s["rec"].id)[0].id),
                     None, id="another-projects"),
        pytest.param(lambda s: dict(project=s["a"], record_id=s["other"].id,
                                    version_id=versions(s["rec"].id)[0].id), None,
                     id="another-records"),
        pytest.param(lambda s: dict(project=s["a"], live=True,
                                    version_id=versions(s["deleted"].id)[0].id), None,
                     id="deleted-record-when-live"),
        pytest.param(lambda s: dict(project=s["a"], version_id="AAAAAAAAAAAAAAAAAAAAAA"), None,
                     id="unknown-id"),
        pytest.param(lambda s: dict(project=s["a"], version_id="9" * 40), None,
                     id="numeric-id-too-long"),
        *[pytest.param(lambda s, n=n: dict(project=s["a"], record_id=s["rec"].id, number=n),
                       None, id=f"number-{label}")
          for label, n in [("negative", -1), ("above-int32", MAX_NUMBER + 1),
                           ("above-int64", 2**63), ("huge", 10**30)]],
    ],
)
def test_find_version(seeded: SeedResult, case: Any, found: int | None) -> None:
    """The version's number when found, else ``NotFound``."""
    kw = case(setting(seeded))
    project = kw.pop("project")
    with Session(get_engine()) as session:
        if found is None:
            with pytest.raises(NotFound):
                find_version(session, project, **kw)
        else:
            version, record = find_version(session, project, **kw)
            assert version.number == found and record.id == version.record_id
