"""``GET /metrics``: HTTP requests by route and status, and the deployment's job metrics
(jobs by status, items processed, jobs finished, events appended, job durations, queue depth,
workers alive) move when requests are served and jobs run."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from bulkjobs import keys
from bulkjobs.connections import get_redis, get_synclog
from models import ops
from models.seed import SeedResult
from worker.deps import Deps, RunConfig
from worker.runner import run
from worker.submit import submit

pytestmark = pytest.mark.services

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient) -> Samples:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_http_requests_are_counted_by_route_template_and_status(client, seeded: SeedResult):
    """Requests are counted under their route template (not the raw path) and status."""
    project = seeded.projects[0]
    before = scrape(client)
    for _ in range(2):
        client.post(f"/api/p/{project.gid}/auth", json={"api_key": project.api_key})
    client.post(f"/api/p/{project.gid}/auth", json={"api_key": "wrong"})
    client.get("/no/such/path")
    after = scrape(client)
    route = "/api/p/{project}/auth"
    total = "bulkjobs_http_requests_total"
    assert value(after, total, method="POST", route=route, status="200") \
        - value(before, total, method="POST", route=route, status="200") == 2
    assert value(after, total, method="POST", route=route, status="401") \
        - value(before, total, method="POST", route=route, status="401") == 1
    assert value(after, total, method="GET", route="<unmatched>", status="404") \
        - value(before, total, method="GET", route="<unmatched>", status="404") == 1
    assert value(after, "bulkjobs_http_request_duration_seconds_count", method="POST",
                 route=route) >= 3


def test_job_metrics_move_when_a_job_is_queued_and_runs(client, seeded: SeedResult):
    """Queueing appends a cc event; running the job counts its items, its terminal status,
    its duration, its record events, and moves the jobs-by-status gauge."""
    project = seeded.projects[0]
    before = scrape(client)
    token = submit(project_gid=project.gid, job="bulk_delete_records",
                   params={"selection": [{"children": project.root}]},
                   actor={"type": "user", "id": "tester"}, log=get_synclog(),
                   enqueue=lambda _token: None)
    queued = scrape(client)
    assert value(queued, "bulkjobs_jobs", status="queued") == 1
    assert value(queued, "bulkjobs_events_appended_total", space="cc") \
        - value(before, "bulkjobs_events_appended_total", space="cc") == 1

    outcome = run(token, deps=Deps.default(get_synclog()),
                  cfg=RunConfig(batch_size=3, record_events=True), requeue=lambda _token: None)
    assert outcome == "done"
    after = scrape(client)
    job = "bulk_delete_records"
    assert value(after, "bulkjobs_jobs", status="queued") == 0
    assert value(after, "bulkjobs_jobs", status="done") == 1
    assert value(after, "bulkjobs_items_processed_total", job=job) == 9  # the root's 9 live heads
    assert value(after, "bulkjobs_jobs_finished_total", job=job, status="done") == 1
    assert value(after, "bulkjobs_job_duration_seconds_count", job=job) == 1
    assert value(after, "bulkjobs_job_duration_seconds_bucket", job=job, le="+Inf") == 1
    # processing and done at least, and the deleted records' events in the project space
    assert value(after, "bulkjobs_events_appended_total", space="cc") \
        - value(queued, "bulkjobs_events_appended_total", space="cc") >= 2
    assert value(after, "bulkjobs_events_appended_total", space="project") >= 9


def test_queue_depth_and_live_workers_are_exported(client, seeded: SeedResult, monkeypatch):
    """Waiting messages and heart-beating workers show as gauges."""
    monkeypatch.setattr(keys, "jobs_queue", lambda: f"{keys.prefix()}:metrics-depth-test")
    get_redis().lpush(keys.jobs_queue(), "m1", "m2", "m3")
    ops.beat_worker(get_redis(), "metrics-test@host")
    samples = scrape(client)
    assert value(samples, "bulkjobs_queue_depth") == 3
    assert value(samples, "bulkjobs_workers_alive") >= 1
