"""The demo data of ``models.seed``: the shapes a newcomer meets first in ``make run``."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, select
from sqlmodel import Session

from models import Record, RecordDeletion, RecordVersion
from models.engine import get_write_engine
from models.queries import records_public
from models.seed import SeededProject, seed

pytestmark = pytest.mark.services


@pytest.fixture
def demo(db: Engine) -> SeededProject:
    """One project of 10,000 records, the size ``make run`` seeds."""
    with get_write_engine().begin() as conn:
        return seed(conn, records=10_000, projects=1, seed_value=2).projects[0]


def test_demo_tree_has_a_link_to_a_live_record(db: Engine, demo: SeededProject) -> None:
    """A link under the root points at a live record, which lists it among its backlinks."""
    with Session(db) as session:
        links = session.exec(select(Record).where(Record.project_gid == demo.gid,
                                                  Record.is_link.is_(True))).scalars().all()
        assert len(links) == 1
        target = session.get(Record, links[0].canonical_id)
        assert target is not None and session.get(RecordDeletion, target.id) is None
        shaped = records_public(session, [links[0], target])
    link, canonical = shaped[links[0].gid], shaped[target.gid]
    assert link["is_link"] is True and link["canonical"] == target.gid
    assert link["parent"] == demo.root and link["childcount"] == 0
    assert canonical["is_link"] is False and canonical["canonical"] == target.gid
    assert canonical["backlinks"] == [links[0].gid]


def test_published_records_have_their_latest_version_published(
    db: Engine, demo: SeededProject,
) -> None:
    """Every published record has exactly one published version, its current one; a draft
    record has none."""
    with Session(db) as session:
        rows = session.execute(
            select(Record.id, Record.status, RecordVersion.is_published, RecordVersion.is_current)
            .join(RecordVersion, RecordVersion.record_id == Record.id)
            .where(Record.project_gid == demo.gid)
        ).all()
    published: dict[int, list[bool]] = {}
    states = {}
    # ``record.status`` is the record's own draft/published state, deleted records included
    for rid, status, is_published, is_current in rows:
        states[rid] = status
        if is_published:
            published.setdefault(rid, []).append(is_current)
    assert set(published) == {rid for rid, state in states.items() if state == "published"}
    assert all(flags == [True] for flags in published.values())
    assert "draft" in states.values()
    assert set(states.values()) == {"draft", "published"}
