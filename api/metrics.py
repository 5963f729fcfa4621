"""Prometheus metrics of the web process, and the cluster-wide job metrics it exports.

``GET /metrics`` answers with two parts:

* this process's own metrics in prometheus_client's default registry — HTTP requests by
  method, route template and status (:data:`REQUESTS`), their latency (:data:`LATENCY`), and
  the library's process/platform collectors;
* :data:`CLUSTER`: metrics of the whole deployment, read at scrape time — jobs by status from
  the job table (gauge), queue depth and live workers (:mod:`models.ops`), and the counters
  every worker and web process keeps in Redis (:mod:`bulkjobs.metrics`: items processed, jobs
  finished, events appended, the job-duration histogram).  Every web process reports the same
  cluster numbers; scrape one, or aggregate them with ``max``.

A scrape never fails because a service is down: the affected families are left out and the
reason logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bulkjobs import metrics
from bulkjobs.connections import get_broker_redis, get_redis
from bulkjobs.settings import get_settings
from models import ops
from models.engine import get_engine

logger = logging.getLogger(__name__)

REQUESTS = Counter(
    "bulkjobs_http_requests", "HTTP requests by method, route template and status.",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "bulkjobs_http_request_duration_seconds", "HTTP request latency by method and route.",
    ["method", "route"],
)

#: Route label of requests that matched no route (kept to one value: no label explosion).
UNMATCHED = "<unmatched>"


def route_of(scope: Scope) -> str:
    """The matched route's path template (``/api/p/{project}/jobs/list``), or :data:`UNMATCHED`."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    if scope.get("path", "").startswith("/ops/static/"):
        return "/ops/static"
    return UNMATCHED


@lru_cache(maxsize=1024)
def _children(method: str, route: str, status: int) -> tuple[Any, Any]:
    # labels() takes a lock and builds a key per call; the label sets are few (routes are
    # templates, unmatched paths one value), so each pair of children is looked up once.
    return REQUESTS.labels(method, route, str(status)), LATENCY.labels(method, route)


def install(app: FastAPI) -> None:
    """Count every request of ``app`` (add it last, so that it wraps the other middleware
    and counts their answers, 413s included)."""
    app.add_middleware(CountRequests)


class CountRequests:
    """ASGI middleware: :data:`REQUESTS` and :data:`LATENCY` for every HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # an exception escaping to the server's error handler is a 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            requests, latency = _children(scope["method"], route_of(scope), status)
            requests.inc()
            latency.observe(time.perf_counter() - start)


class ClusterCollector(Collector):
    """The deployment's job metrics, read from the job table and Redis at scrape time."""

    def collect(self) -> Iterator[Metric]:
        yield from self._from_database()
        yield from self._from_redis()

    def _from_database(self) -> Iterator[Metric]:
        try:
            with get_engine().connect() as conn:
                counts = ops.jobs_by_status(conn)
        except Exception as exc:
            logger.warning("metrics: job table unavailable: %s", exc)
            return
        gauge = GaugeMetricFamily("bulkjobs_jobs", "Jobs in the job table by status.",
                                  labels=["status"])
        for status, n in sorted(counts.items()):
            gauge.add_metric([status], n)
        yield gauge

    def _from_redis(self) -> Iterator[Metric]:
        settings = get_settings()
        try:
            totals = metrics.read(get_redis())
            depth = ops.queue_depth(get_broker_redis())
            alive = ops.alive_workers(get_redis(), period=settings.worker_heartbeat)
        except Exception as exc:
            logger.warning("metrics: Redis unavailable: %s", exc)
            return
        if depth is not None:
            yield GaugeMetricFamily("bulkjobs_queue_depth",
                                    "Messages waiting in the Celery jobs queue.", value=depth)
        yield GaugeMetricFamily("bulkjobs_workers_alive",
                                "Celery workers whose heartbeat is recent.", value=len(alive))
        items = CounterMetricFamily("bulkjobs_items_processed",
                                    "Items processed by jobs (done or failed), by job name.",
                                    labels=["job"])
        for job, n in sorted(totals.items.items()):
            items.add_metric([job], n)
        yield items
        finished = CounterMetricFamily("bulkjobs_jobs_finished",
                                       "Jobs that reached a terminal status.",
                                       labels=["job", "status"])
        for (job, status), n in sorted(totals.finished.items()):
            finished.add_metric([job, status], n)
        yield finished
        events = CounterMetricFamily("bulkjobs_events_appended",
                                     "Sync-log events appended, by space kind (cc, project).",
                                     labels=["space"])
        for space in ("cc", "project"):
            events.add_metric([space], totals.events.get(space, 0))
        yield events
        duration = HistogramMetricFamily(
            "bulkjobs_job_duration_seconds", "Seconds from queueing to the terminal state.",
            labels=["job"],
        )
        bounds = [repr(b) for b in metrics.DURATION_BUCKETS] + ["+Inf"]
        for job, counts in sorted(totals.duration_buckets.items()):
            cumulative, buckets = 0, []
            for bound, n in zip(bounds, counts, strict=True):
                cumulative += n
                buckets.append((bound, cumulative))
            duration.add_metric([job], buckets, totals.duration_sum.get(job, 0.0))
        yield duration


#: The cluster-wide metrics, kept apart from the default registry so that importing this
#: module anywhere (tests, the CLI) never makes a default-registry scrape query services.
CLUSTER = CollectorRegistry(auto_describe=False)
CLUSTER.register(ClusterCollector())
