"""``/metrics`` in Prometheus text format.

HTTP requests are counted per route template and status by a middleware; queue depth, running
jobs, live workers and job outcomes/durations are read from Redis at scrape time, so every API
replica reports the same job figures. One registry per app: no global state.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector
from rq import Queue
from rq.registry import StartedJobRegistry
from starlette.types import Scope

from common.queue import FairQueue
from common.settings import Settings
from common.store import read_stats
from service.jobs import live_workers

#: The methods counted under their own name (RFC 9110); any other is counted as "other".
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})


def _levels(queue: Queue) -> list[Queue]:
    return queue.levels() if isinstance(queue, FairQueue) else [queue]


class JobCollector(Collector):
    def __init__(self, queue: Queue, settings: Settings) -> None:
        self.queue = queue
        self.settings = settings

    def collect(self) -> Iterable[Metric]:
        q = self.queue
        yield GaugeMetricFamily("odeserve_queue_depth", "Jobs waiting in the queue.", value=q.count)
        yield GaugeMetricFamily(
            "odeserve_jobs_running",
            "Jobs being trained now.",
            value=sum(StartedJobRegistry(queue=level).count for level in _levels(q)),
        )
        yield GaugeMetricFamily(
            "odeserve_workers", "Workers with a fresh heartbeat.", value=live_workers(q, self.settings)
        )
        stats = read_stats(q.connection)
        outcomes = CounterMetricFamily("odeserve_job_outcomes", "Finished jobs by outcome.", labels=["outcome"])
        for outcome, count in sorted(stats.outcomes.items()):
            outcomes.add_metric([outcome], count)
        yield outcomes
        yield SummaryMetricFamily(
            "odeserve_job_duration_seconds",
            "Training time of finished jobs.",
            count_value=stats.duration_count,
            sum_value=stats.duration_sum,
        )


class Metrics:
    """The app's registry. HTTP requests are fed in by the request-id middleware, which already
    times every request (``observe_request``)."""

    def __init__(self, queue: Queue, settings: Settings) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "odeserve_http_requests", "HTTP requests.", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "odeserve_http_request_seconds", "HTTP request latency.", ["method", "route"], registry=self.registry
        )
        self.registry.register(JobCollector(queue, settings))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def observe_request(self, scope: Scope, method: str, status: int, seconds: float) -> None:
        route = getattr(scope.get("route"), "path", None) or "unmatched"  # the template, not the raw path
        method = method if method in HTTP_METHODS else "other"  # made-up methods: one label, not one each
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)
