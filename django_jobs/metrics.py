"""Prometheus metrics, through prometheus_client (the ``metrics`` extra).

Two sources, one exposition:

- **the worker's own observations** (counters and histograms, kept in the process that ran
  the job): runs by outcome, the wait from due time to start, the run's duration. They exist
  only in a `runjobs --metrics-port` process (`enable_worker()`); elsewhere, and without
  prometheus_client, the executor's hook is one None check.
- **the database's counts** (gauges, read at scrape time by `DatabaseCollector`): jobs by
  queue, name and state (scheduled, running, failed), live workers, late and failing
  recurring jobs (alerts.py). Counted by a few grouped, indexed queries and reused for
  DJANGO_JOBS["METRICS_CACHE"] seconds, so a scrape every few seconds from several
  Prometheus servers costs one count per period.

`runjobs --processes N` uses prometheus_client's multiprocess mode: the supervisor makes a
directory, each child writes its samples there (memory-mapped files), and the supervisor
alone serves the port, summing every child's counters and histograms (children that died
or were replaced included, so counters never go backwards).

`metrics_view` serves the database's counts from the web process (a Django view to mount).
"""

from __future__ import annotations

import hmac
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import nullcontext
from datetime import datetime
from typing import Any

from django.db import connections

from .conf import settings

try:
    import prometheus_client
    from prometheus_client import values as prometheus_values
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.registry import Collector, CollectorRegistry
except ImportError:  # the metrics extra is not installed
    prometheus_client = None  # type: ignore[assignment]
    Collector = object  # type: ignore[assignment,misc]

logger = logging.getLogger("django_jobs.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own variable
# Seconds: from a few milliseconds (a quick job on an idle worker) to an hour.
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)
GAUGE_STATES = ("scheduled", "running", "failed")  # finished jobs are history: see runs_total
INSTALL_HINT = 'pip install "django-dbjobs[metrics]"'


def require() -> None:
    """Raise a JobsError that says how to install prometheus_client, if it is missing."""
    if prometheus_client is None:
        from .exceptions import JobsError

        raise JobsError(
            f"Metrics need prometheus_client, which is not installed; run {INSTALL_HINT}."
        )


# The worker's observations


class WorkerMetrics:
    """The counters and histograms of one worker process."""

    def __init__(self, registry: Any) -> None:
        labels = ("queue", "name")
        self.runs = prometheus_client.Counter(
            "django_jobs_runs",
            "Runs ended by this worker, by outcome (succeeded, failed, timed_out, cancelled).",
            (*labels, "outcome"),
            registry=registry,
        )
        self.wait = prometheus_client.Histogram(
            "django_jobs_run_wait_seconds",
            "Seconds from a job's due time to the start of its run (database clock).",
            labels,
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self.duration = prometheus_client.Histogram(
            "django_jobs_run_duration_seconds",
            "Seconds from a run's start to its end.",
            labels,
            buckets=DURATION_BUCKETS,
            registry=registry,
        )

    def observe(
        self,
        *,
        queue: str,
        name: str,
        outcome: str,
        duration: float,
        due_at: datetime | None,
        started_at: datetime | None,
    ) -> None:
        self.runs.labels(queue, name, outcome).inc()
        self.duration.labels(queue, name).observe(max(0.0, duration))
        if isinstance(due_at, datetime) and isinstance(started_at, datetime):
            waited = (started_at - due_at).total_seconds()
            self.wait.labels(queue, name).observe(max(0.0, waited))


_worker: WorkerMetrics | None = None  # set in a runjobs process that exports metrics


def worker_metrics() -> WorkerMetrics | None:
    """This process's WorkerMetrics, or None when it exports none (the executor's check)."""
    return _worker


def enable_worker(registry: Any = None) -> WorkerMetrics:
    """Create this process's run metrics (in multiprocess mode if its directory is set)."""
    global _worker
    require()
    if _worker is None:
        if os.environ.get(MULTIPROC_ENV):
            # A forked child inherits the supervisor's value class, chosen when
            # prometheus_client was imported: write samples to the shared directory instead.
            prometheus_values.ValueClass = prometheus_values.MultiProcessValue()
            registry = CollectorRegistry()  # never collected here; the supervisor reads files
        _worker = WorkerMetrics(prometheus_client.REGISTRY if registry is None else registry)
    return _worker


# The database's counts


class DatabaseCollector(Collector):  # type: ignore[misc,valid-type]
    """Gauges counted by the database at scrape time, reused for METRICS_CACHE seconds."""

    def __init__(self, using: str | None = None, lock: Any = None, close: bool = True) -> None:
        self.using = using
        # Held while counting: the cluster supervisor takes it before it forks, so a child
        # never inherits a connection that this thread has open.
        self.lock = lock
        # A scrape thread of runjobs keeps no connection between scrapes; a request of the
        # web process keeps its own (Django closes it, and it may be inside a transaction).
        self.close = close
        self._cache: list[Any] = []
        self._counted_at = -1e9
        self._mutex = threading.Lock()

    def collect(self) -> Iterator[Any]:
        with self._mutex:
            if time.monotonic() - self._counted_at >= settings.METRICS_CACHE:
                self._cache = self._count()
                self._counted_at = time.monotonic()
            families = self._cache
        yield from families

    def _count(self) -> list[Any]:
        using = self.using or settings.DATABASE
        with self.lock if self.lock is not None else nullcontext():
            try:
                return _database_families(using)
            finally:
                if self.close:
                    connections[using].close()


def gauge_counts(using: str) -> list[Any]:
    """The jobs gauge's grouped counts, each read from an index: the waiting and failed rows
    from the claim index, which (state, ...) leads, so that succeeded or cancelled rows, the
    bulk of a big table, are never read; the running rows, which PostgreSQL's claim index
    leaves out (migration 0019), from the running jobs' index."""
    from django.db.models import Count

    from .models import Job

    indexed = [state for state in GAUGE_STATES if state != "running"]
    return [
        Job.objects.using(using)
        .filter(**lookup)
        .values_list("queue", "name", "state")
        .annotate(count=Count("pk"))
        .order_by()
        for lookup in ({"state__in": indexed}, {"state": "running"})
    ]


def _database_families(using: str) -> list[Any]:
    from . import alerts
    from .models import Job, Worker

    jobs = GaugeMetricFamily(
        "django_jobs_jobs",
        "Jobs by queue, name and state (scheduled, running, failed), counted by the database.",
        labels=("queue", "name", "state"),
    )
    for rows in gauge_counts(using):
        for queue, name, state, count in rows:
            jobs.add_metric((queue, name, state), count)
    workers = GaugeMetricFamily(
        "django_jobs_workers_alive", "Worker processes whose heartbeat has not expired."
    )
    workers.add_metric((), Worker.objects.using(using).alive().count())
    flagged = alerts.flagged(Job.objects.using(using))
    late = GaugeMetricFamily(
        "django_jobs_late_jobs",
        "Recurring jobs whose due run waited unclaimed past its threshold (LATE_AFTER).",
    )
    late.add_metric((), sum(1 for alert in flagged if alert.late))
    failing = GaugeMetricFamily(
        "django_jobs_failing_jobs",
        "Recurring jobs whose last ALERT_AFTER_FAILURES runs failed.",
    )
    failing.add_metric((), sum(1 for alert in flagged if alert.failing))
    return [jobs, workers, late, failing]


def database_registry(using: str | None = None) -> Any:
    """A registry of the database's counts alone (what metrics_view serves)."""
    require()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(using, close=False))
    return registry


_view_registry: Any = None


# Serving


def serve(port: int, host: str, registry: Any) -> Any:
    """Serve `registry` over HTTP on host:port in a daemon thread; returns the server."""
    server, _thread = prometheus_client.start_http_server(port, addr=host, registry=registry)
    return server


def worker_registry(using: str | None = None) -> Any:
    """What one runjobs process serves: prometheus_client's default registry (the process's
    own metrics, the project's, the runs') and the database's counts."""
    require()
    enable_worker()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(prometheus_client.REGISTRY)
    registry.register(DatabaseCollector(using))
    return registry


class MultiprocessDirectory:
    """The directory where a supervisor's children write their samples."""

    def __init__(self) -> None:
        require()
        given = os.environ.get(MULTIPROC_ENV)
        # A directory the project chose (set before start) is its own; ours is removed.
        self.owned = not given
        self.path = given or tempfile.mkdtemp(prefix="django_jobs-metrics-")
        os.environ[MULTIPROC_ENV] = self.path

    def registry(self, lock: Any, using: str | None = None) -> Any:
        from prometheus_client import multiprocess

        registry = CollectorRegistry(auto_describe=False)
        multiprocess.MultiProcessCollector(registry, path=self.path)
        registry.register(DatabaseCollector(using, lock=lock))
        return registry

    def remove(self) -> None:
        if self.owned:
            shutil.rmtree(self.path, ignore_errors=True)
            os.environ.pop(MULTIPROC_ENV, None)


# The Django view


def metrics_view(request: Any) -> Any:
    """The database's counts in Prometheus' text format, for a project to mount.

    Allowed: a request with "Authorization: Bearer <DJANGO_JOBS["METRICS_TOKEN"]>" (what a
    scraper sends), or a logged-in user with the django_jobs.view_job permission. Anyone
    else gets 403 (401 with a wrong or missing token, when a token is set).
    """
    from django.http import HttpResponse

    global _view_registry
    token = settings.METRICS_TOKEN
    sent = request.headers.get("Authorization", "")
    if token and sent.startswith("Bearer "):
        if not hmac.compare_digest(sent[len("Bearer ") :].encode(), token.encode()):
            return HttpResponse("Wrong metrics token.\n", status=401, content_type="text/plain")
    elif not (user := getattr(request, "user", None)) or not user.has_perm("django_jobs.view_job"):
        return HttpResponse(
            "Metrics need the django_jobs.view_job permission or the metrics token.\n",
            status=401 if token else 403,
            content_type="text/plain",
        )
    if prometheus_client is None:
        return HttpResponse(
            f"prometheus_client is not installed; run {INSTALL_HINT}.\n",
            status=501,
            content_type="text/plain",
        )
    if _view_registry is None:
        _view_registry = database_registry()
    body = prometheus_client.generate_latest(_view_registry)
    return HttpResponse(body, content_type=prometheus_client.CONTENT_TYPE_LATEST)
