"""Version restore and revert as jobs (``worker/jobs/versions.py``): content, history, the
result stored on the job row, and the failures that reject the job."""

from __future__ import annotations

from typing import Any

import pytest

from bulkjobs.synclog import SyncLog
from models.seed import SeededProject, SeedResult
from tests.worker.helpers import ACTOR, do, records, space_events, versions

pytestmark = pytest.mark.services

RESTORE, REVERT = "restore_record_version", "revert_record_version"


def with_history(project: SeededProject) -> Any:
    """A live record the seed gave three versions (numbers 0, 1, 2; 2 is current)."""
    recs = records(project.gid)
    return next(r for r in recs.values() if r.id % 50 == 0 and r.status != "deleted"
                and len(versions(r.id)) == 3)


def test_restore_makes_the_snapshot_current_and_stores_the_record(
    log: SyncLog, project: SeededProject
) -> None:
    """Restoring version 0 sets the record's title/fields/definition/channels from its
    snapshot, writes version 3 (current), leaves the status alone, and stores result 200
    with the record in its public shape and the new version."""
    rec = with_history(project)
    old = versions(rec.id)
    assert old[0].snapshot["title"] != rec.title
    token, row = do(log, project, RESTORE, [rec.gid], {"version": old[0].id})
    assert row.status == "done" and row.info["failed"] == 0
    after = records(project.gid)[rec.gid]
    assert after.title == old[0].snapshot["title"] and after.fields == old[0].snapshot["fields"]
    assert after.status == rec.status
    new = versions(rec.id)
    assert [v.number for v in new] == [0, 1, 2, 3]
    assert [v.is_current for v in new] == [False, False, False, True]
    assert new[3].snapshot["title"] == old[0].snapshot["title"]
    assert new[3].editor == ACTOR and new[3].comment == "Restored version 0"
    assert row.result_status == 200
    payload = row.result_payload
    assert payload["version"] == {"id": new[3].id, "number": 3}
    assert payload["record"]["gid"] == rec.gid
    assert payload["record"]["title"] == old[0].snapshot["title"]
    assert payload["record"]["path"][0] == rec.gid and payload["record"]["path"][-1] == (
        project.root)


def test_revert_by_number_is_commented(log: SyncLog, project: SeededProject) -> None:
    """Reverting to revision 1 writes a new version commented "Reverted to revision 1"."""
    rec = with_history(project)
    _, row = do(log, project, REVERT, [rec.gid], {"version": 1})
    assert (row.status, row.result_status) == ("done", 200)
    new = versions(rec.id)
    assert new[-1].comment == "Reverted to revision 1"
    assert records(project.gid)[rec.gid].title == new[1].snapshot["title"]


def test_restore_announces_the_record(log: SyncLog, project: SeededProject) -> None:
    """With record events on, the restored record gets one ``records`` UPDATE event."""
    rec = with_history(project)
    vid = versions(rec.id)[1].id
    do(log, project, RESTORE, [rec.gid], {"version": vid}, record_events=True)
    events = space_events(log, project.gid)
    assert [(e["action"], e["data_type"], e["data_key"]) for e in events] == [
        ("UPDATE", "records", rec.gid)]


@pytest.mark.parametrize(
    ("case", "status", "message"),
    [
        pytest.param("unknown_version", 404, "Version not found", id="unknown-version"),
        pytest.param("other_records_version", 404, "Version not found", id="other-record"),
        pytest.param("deleted_record", 422, "The record is deleted", id="deleted"),
        pytest.param("malformed", 422, "version must be a version id", id="malformed"),
        pytest.param("nothing_selected", 404, "Record not found", id="nothing-selected"),
    ],
)
def test_failed_restore_is_rejected_with_an_error_result(
    log: SyncLog, project: SeededProject, case: str, status: int, message: str
) -> None:
    """A restore that cannot happen ends ``rejected`` with ``info.error``, an error status and
    an error payload on the job row; the record and its history are untouched."""
    rec = with_history(project)
    recs = records(project.gid)
    deleted = next(r for r in recs.values() if r.status == "deleted")
    other = next(r for r in recs.values() if r.id != rec.id and r.status != "deleted")
    selection, version = {
        "unknown_version": ([rec.gid], "AAAAAAAAAAAAAAAAAAAAAA"),
        "other_records_version": ([rec.gid], versions(other.id)[0].id),
        "deleted_record": ([deleted.gid], versions(deleted.id)[0].id),
        "malformed": ([rec.gid], 17),
        "nothing_selected": ([], "AAAAAAAAAAAAAAAAAAAAAA"),
    }[case]
    target = deleted if case == "deleted_record" else rec
    before = versions(target.id)
    _, row = do(log, project, RESTORE, selection, {"version": version})
    assert (row.status, row.info["error"], row.result_status) == ("rejected", message, status)
    assert row.result_payload["error"]["status"] == status
    assert row.result_payload["error"]["message"] == message
    assert versions(target.id) == before
    assert records(project.gid)[target.gid] == recs[target.gid]


def test_restore_of_another_projects_version_is_rejected(
    log: SyncLog, seeded: SeedResult
) -> None:
    """A version id of another project's record is not found in this project's restore (404);
    neither record changes."""
    a, b = seeded.projects
    rec_a, rec_b = with_history(a), with_history(b)
    before = versions(rec_a.id), versions(rec_b.id)
    _, row = do(log, b, RESTORE, [rec_b.gid], {"version": versions(rec_a.id)[0].id})
    assert (row.status, row.result_status) == ("rejected", 404)
    assert (versions(rec_a.id), versions(rec_b.id)) == before


@pytest.mark.parametrize("number", [-1, 2**31, 2**63, 10**30],
                         ids=["negative", "above-int32", "above-int64", "huge"])
def test_revert_to_a_number_beyond_the_column_is_not_found(
    log: SyncLog, project: SeededProject, number: int
) -> None:
    """A revision number no version can have (the column is 32-bit) rejects the job with
    404 "Version n not found" — on SQLite and PostgreSQL alike, never a database error."""
    rec = with_history(project)
    before = versions(rec.id)
    _, row = do(log, project, REVERT, [rec.gid], {"version": number})
    message = f"Version {number} not found"
    assert (row.status, row.info["error"], row.result_status) == ("rejected", message, 404)
    assert row.result_payload["error"]["code"] == "not_found"
    assert versions(rec.id) == before
