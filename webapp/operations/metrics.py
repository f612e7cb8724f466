"""The web process's Prometheus metrics (``/metrics``).

At scrape time, from the database and the shared cache (so any web process gives the whole
deployment's state): runs and jobs by status, the queue depth per deployment (runs and jobs
waiting for a worker), each deployment's engine load as its workers last reported it, and the
live workers. Measured in this process: the stream lag of run events (a worker's publish to this
process handing the frames to the browser's socket). This process's own registry follows
(Python process metrics, and the engine series when the embedded default runs engines here).
Workers serve their own series (``workers.metrics``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from django.core.cache import cache
from django.db.models import Count
from prometheus_client import REGISTRY, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from webapp.jobs.models import Job, JobStatus
from webapp.library.models import ModelDeployment
from webapp.playground.models import Run, RunStatus
from webapp.playground.services import engine_status_key
from workers import heartbeat

log = logging.getLogger(__name__)

STREAM_LAG = Histogram(
    "steerlab_stream_lag_seconds",
    "Run events: from a worker publishing a frame to this process handing it to the browser's socket.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


def observe_stream_lag(published_at: Any) -> None:
    """Record the lag of a channel-layer message of run events (wall clocks: keep them in sync)."""
    if isinstance(published_at, int | float) and not isinstance(published_at, bool):
        STREAM_LAG.observe(max(time.time() - published_at, 0.0))


class StateCollector(Collector):
    """The deployment's state, read when Prometheus scrapes."""

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "steerlab_metrics_source_up", "1 if this scrape could read the source, else 0.", labels=["source"]
        )
        deployments: list[str] = []

        def database() -> list[Metric]:
            deployments.extend(ModelDeployment.objects.order_by("name").values_list("name", flat=True))
            return list(self._database(deployments))

        for source, read in (("database", database), ("cache", lambda: list(self._cache(deployments)))):
            try:
                families = read()
            except Exception:
                log.exception("operations.metrics_source_failed", extra={"source": source})
                up.add_metric([source], 0)
                continue
            up.add_metric([source], 1)
            yield from families
        yield up

    def _database(self, deployments: list[str]) -> Iterator[Metric]:
        runs = GaugeMetricFamily("steerlab_runs", "Runs in the database, by status.", labels=["status"])
        counts = dict(Run.objects.values_list("status").annotate(n=Count("id")).order_by())
        for status in RunStatus.values:
            runs.add_metric([status], counts.get(status, 0))
        yield runs
        jobs = GaugeMetricFamily("steerlab_jobs", "Jobs in the database, by status.", labels=["status"])
        counts = dict(Job.objects.values_list("status").annotate(n=Count("id")).order_by())
        for status in JobStatus.values:
            jobs.add_metric([status], counts.get(status, 0))
        yield jobs
        depth = GaugeMetricFamily(
            "steerlab_queue_depth",
            "Runs and jobs waiting for a worker, per model deployment.",
            labels=["deployment", "kind"],
        )
        for kind, model, queued in (("run", Run, RunStatus.QUEUED), ("job", Job, JobStatus.QUEUED)):
            waiting = dict(
                model.objects.filter(status=queued)
                .values_list("deployment__name")
                .annotate(n=Count("id"))
                .order_by()
            )
            for name in deployments:
                depth.add_metric([name, kind], waiting.get(name, 0))
        yield depth

    def _cache(self, deployments: list[str]) -> Iterator[Metric]:
        active = GaugeMetricFamily(
            "steerlab_engine_active_runs",
            "Runs in a deployment's engine, as its worker last reported (after each run).",
            labels=["deployment", "worker"],
        )
        capacity = GaugeMetricFamily(
            "steerlab_engine_max_requests",
            "Requests a deployment's engine serves at once.",
            labels=["deployment"],
        )
        statuses = cache.get_many([engine_status_key(n) for n in deployments])
        for name in deployments:
            status = statuses.get(engine_status_key(name))
            if status:
                active.add_metric([name, str(status.get("worker", ""))], status.get("active_runs", 0))
                capacity.add_metric([name], status.get("max_requests", 0))
        yield active
        yield capacity
        entries = heartbeat.workers()
        workers = GaugeMetricFamily(
            "steerlab_workers", "Worker processes with a fresh heartbeat, by state.", labels=["state"]
        )
        workers.add_metric(["live"], sum(not e.get("draining") for e in entries))
        workers.add_metric(["draining"], sum(bool(e.get("draining")) for e in entries))
        yield workers


class _Exposition:
    """This process's registry followed by the state read at scrape time."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()
        yield from StateCollector().collect()


def render(accept: str) -> tuple[bytes, str]:
    """The metrics in the format ``accept`` asks for (Prometheus text or OpenMetrics)."""
    encoder, content_type = choose_encoder(accept)
    return encoder(_Exposition()), content_type
