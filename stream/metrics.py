"""Prometheus metrics of one stream process, read at scrape time.

The hot path only bumps plain integers (a ``prometheus_client.Counter`` takes a lock per
increment, which the fan-out would pay once per delivered event); this collector turns them
into metric families when ``/metrics`` is scraped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from stream.fanout import Hub
from stream.reader import Reader


class Observed(Protocol):
    """What the collector reads of a stream process (a :class:`stream.server.StreamServer`)."""

    @property
    def hub(self) -> Hub: ...
    @property
    def reader(self) -> Reader: ...
    @property
    def deliveries(self) -> int: ...
    @property
    def slow_closed(self) -> int: ...
    @property
    def gap_closed(self) -> int: ...


class StreamCollector(Collector):
    def __init__(self, server: Observed) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        s, hub, reader = self.server, self.server.hub, self.server.reader
        yield GaugeMetricFamily(
            "bulkjobs_stream_connections", "Authenticated websocket connections.",
            value=len(hub.subscribers),
        )
        yield GaugeMetricFamily(
            "bulkjobs_stream_subscriptions", "Subscriptions over all connections.",
            value=hub.subscriptions,
        )
        yield GaugeMetricFamily(
            "bulkjobs_stream_outbox_events", "Events queued for writing over all connections.",
            value=sum(p.pending for p in hub.subscribers),
        )
        yield CounterMetricFamily(
            "bulkjobs_stream_deliveries", "Events written to subscribers.", value=s.deliveries,
        )
        yield CounterMetricFamily(
            "bulkjobs_stream_coalesced",
            "Queued progress events replaced by a newer event of the same job.",
            value=hub.coalesced,
        )
        yield CounterMetricFamily(
            "bulkjobs_stream_slow_closed", "Connections closed with 4008 for falling behind.",
            value=s.slow_closed,
        )
        yield CounterMetricFamily(
            "bulkjobs_stream_gap_closed",
            "Connections closed with 4008 because the sync log lost events.",
            value=s.gap_closed,
        )
        yield GaugeMetricFamily(
            "bulkjobs_stream_reader_lag_seconds",
            "Seconds between the append and the read of the newest event.", value=reader.lag,
        )
        yield GaugeMetricFamily(
            "bulkjobs_stream_reader_connected", "1 while the sync log reader is connected.",
            value=1 if reader.connected else 0,
        )
        yield CounterMetricFamily(
            "bulkjobs_stream_reader_reconnects", "Times the reader lost Redis and reconnected.",
            value=reader.reconnects,
        )
