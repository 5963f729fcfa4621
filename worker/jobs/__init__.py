"""The job catalogue: every job name mapped to its :class:`~worker.jobs.base.JobSpec`."""

from __future__ import annotations

from worker.jobs import versions
from worker.jobs.base import Context, Failure, JobSpec, error_result
from worker.jobs.records import (
    delete_batch,
    delete_prepare,
    permanent_delete_batch,
    permanent_delete_one,
    permanent_delete_prepare,
    undelete_batch,
    undelete_prepare,
)
from worker.jobs.schema import commit_batch, copy_batch, revert_batch, save_as_new_batch

CATALOGUE: dict[str, JobSpec] = {
    spec.name: spec
    for spec in (
        JobSpec("bulk_delete_records", kind="records", mode="live", batch=delete_batch,
                prepare=delete_prepare),
        JobSpec("bulk_undelete_records", kind="records", mode="deleted", batch=undelete_batch,
                prepare=undelete_prepare),
        JobSpec("bulk_permanent_delete_records", kind="records", mode="deleted",
                batch=permanent_delete_batch, prepare=permanent_delete_prepare),
        JobSpec("permanent_delete_record", kind="records", mode="deleted",
                batch=permanent_delete_one, prepare=permanent_delete_prepare,
                no_item_result=error_result(422, "not_found", "Record not found")),
        JobSpec("restore_record_version", kind="records", mode="live",
                batch=versions.restore_batch, params=("version",),
                no_item_result=versions.NOT_FOUND),
        JobSpec("revert_record_version", kind="records", mode="live",
                batch=versions.revert_batch, params=("version", "version_id"),
                no_item_result=versions.NOT_FOUND),
        JobSpec("bulk_commit_schema_items", kind="schema", mode="live", batch=commit_batch),
        JobSpec("bulk_revert_schema_items", kind="schema", mode="live", batch=revert_batch),
        JobSpec("bulk_save_as_new_schema_items", kind="schema", mode="live",
                batch=save_as_new_batch),
        JobSpec("bulk_copy_schema_items", kind="schema", mode="live", batch=copy_batch),
    )
}

__all__ = ["CATALOGUE", "Context", "Failure", "JobSpec"]
