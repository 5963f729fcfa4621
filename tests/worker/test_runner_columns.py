"""A run reads its job's selection (``params``) and actor a fixed number of times, not once
a batch: the batch loop and the heartbeat read the job row without them
(``worker.rows.load_state``)."""

from __future__ import annotations

import re

from bulkjobs.synclog import SyncLog
from models.engine import get_engine
from models.seed import SeededProject
from tests.plans import captured
from tests.worker.helpers import cfg, job_row, new_job, run_to_end

PARAMS = re.compile(r"\bjob\.params\b")


def _reads(log: SyncLog, project: SeededProject, heads: list[str], batch: int
           ) -> tuple[int, int]:
    """Run a bulk undelete of ``heads`` in batches of ``batch``: (batches, reads of params)."""
    token = new_job(log, project, "bulk_undelete_records", heads)
    with captured(get_engine()) as cap:
        run_to_end(token, log, cfg(batch_size=batch, adaptive_batches=False))
    assert job_row(token).status == "done"
    batches = [sql for sql, _ in cap.statements
               if re.search(r"\bFROM job_item\b", sql) and "LIMIT" in sql.upper()]
    return len(batches), len([sql for sql, _ in cap.statements if PARAMS.search(sql)])


def test_batches_do_not_read_params(log: SyncLog, project: SeededProject):
    """Five items in one batch or in five: the job's params are read as often either way."""
    one_batch, reads_once = _reads(log, project, project.heads[:5], 5)
    five_batches, reads_five = _reads(log, project, project.heads[5:10], 1)
    assert five_batches >= 5 > one_batch
    assert reads_five == reads_once
