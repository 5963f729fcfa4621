"""The job catalogue: every job name mapped to its :class:`~worker.jobs.base.JobSpec`."""

from __future__ import annotations

from worker.jobs.base import Context, Failure, JobSpec
from worker.jobs.records import delete_batch, undelete_batch

CATALOGUE: dict[str, JobSpec] = {
    spec.name: spec
    for spec in (
        JobSpec("bulk_delete_records", kind="records", mode="live", batch=delete_batch),
        JobSpec("bulk_undelete_records", kind="records", mode="deleted", batch=undelete_batch),
    )
}

__all__ = ["CATALOGUE", "Context", "Failure", "JobSpec"]
