"""Prometheus metrics (django_jobs.metrics): scraped over HTTP from real runjobs processes and
from the Django view, and parsed with prometheus_client's own parser."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from django_jobs import now, schedule_many
from django_jobs.models import Job, JobRun, JobState, RunOutcome
from tests.conftest import ROOT, wait_for
from tests.testapp.models import Execution

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def parse(text: str) -> Samples:
    """Every sample as (name, sorted labels) -> value."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        return parse(response.read().decode())


def value(samples: Samples, metric: str, **labels: str) -> float:
    return samples.get((metric, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, metric: str, **labels: str) -> float:
    """The sum of `metric` over every label set that includes `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == metric and wanted <= set(ls))


@pytest.mark.slow
def test_a_worker_serves_its_runs_and_the_database_counts(start_worker):
    port = free_port()
    schedule_many([("now", "record", {}) for _ in range(5)])
    failed = now("always-fails")
    # A recurring job late by 10 minutes, in a queue this worker does not serve.
    Job.objects.create(
        name="monthly",
        schedule="0 3 1 * *",
        queue="reports",
        next_run_at=timezone.now() - timedelta(minutes=10),
    )
    worker = start_worker("--metrics-port", str(port), "--concurrency", "2", "--queue", "default")

    def drained() -> bool:
        return Job.objects.get(pk=failed.pk).state == JobState.FAILED and (
            Job.objects.filter(name="record", state=JobState.SUCCEEDED).count() == 5
        )

    wait_for(drained)
    wait_for(lambda: "Metrics for Prometheus on http://127.0.0.1" in worker.output())
    samples = scrape(port)
    runs = "django_jobs_runs_total"
    assert value(samples, runs, queue="default", name="record", outcome="succeeded") == 5
    assert value(samples, runs, queue="default", name="always-fails", outcome="failed") == 2
    wait_count = "django_jobs_run_wait_seconds_count"
    assert value(samples, wait_count, queue="default", name="record") == 5
    # Each record waited from its due time ("now", when scheduled) to its start.
    waited = value(samples, "django_jobs_run_wait_seconds_sum", queue="default", name="record")
    assert 0 < waited < 60
    assert (
        value(
            samples,
            "django_jobs_run_wait_seconds_bucket",
            queue="default",
            name="record",
            le="+Inf",
        )
        == 5
    )
    duration_count = "django_jobs_run_duration_seconds_count"
    assert value(samples, duration_count, queue="default", name="always-fails") == 2
    # The database's counts.
    assert (
        value(samples, "django_jobs_jobs", queue="default", name="always-fails", state="failed")
        == 1
    )
    assert (
        value(samples, "django_jobs_jobs", queue="reports", name="monthly", state="scheduled") == 1
    )
    assert (
        "django_jobs_jobs",
        (("name", "record"), ("queue", "default"), ("state", "succeeded")),
    ) not in samples
    assert value(samples, "django_jobs_workers_alive") == 1
    assert value(samples, "django_jobs_late_jobs") == 1
    assert value(samples, "django_jobs_failing_jobs") == 0
    # prometheus_client's own process metrics come along.
    assert value(samples, "process_cpu_seconds_total") > 0
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.output()


@pytest.mark.slow
def test_a_supervisor_serves_the_runs_of_every_worker_process(start_worker):
    port = free_port()
    schedule_many([("now", "sleep", {"seconds": 0.3}) for _ in range(12)])
    # One thread each, so that 12 jobs of 0.3 s need both processes: with the default of 10,
    # the first process to start could claim them all before the other one looks.
    worker = start_worker("--processes", "2", "--concurrency", "1", "--metrics-port", str(port))
    wait_for(lambda: Job.objects.filter(state=JobState.SUCCEEDED).count() == 12, timeout=60)
    pids = set(Execution.objects.values_list("worker_pid", flat=True))
    assert len(pids) == 2, "both worker processes ran jobs"
    wait_for(lambda: "worker processes write their samples to" in worker.output())
    samples = scrape(port)
    assert (
        value(samples, "django_jobs_runs_total", queue="default", name="sleep", outcome="succeeded")
        == 12
    )
    assert total(samples, "django_jobs_run_duration_seconds_count", name="sleep") == 12
    assert value(samples, "django_jobs_workers_alive") == 2
    # A replaced child's samples stay: counters never go backwards.
    victim = pids.pop()
    os.kill(victim, signal.SIGKILL)
    schedule_many([("now", "sleep", {"seconds": 0.01}) for _ in range(4)])
    wait_for(lambda: Job.objects.filter(state=JobState.SUCCEEDED).count() == 16, timeout=60)
    samples = scrape(port)
    assert total(samples, "django_jobs_runs_total", name="sleep", outcome="succeeded") == 16
    [directory] = [
        line.rsplit(" ", 1)[-1].rstrip(".")
        for line in worker.output().splitlines()
        if "write their samples to" in line
    ]
    assert Path(directory).is_dir()
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.output()
    assert not Path(directory).exists(), "the supervisor removes its directory"


# The Django view


@pytest.fixture
def failing_recurring(db) -> Job:
    job = Job.objects.create(name="monthly", schedule="0 3 1 * *")
    for _ in range(3):
        JobRun.objects.create(
            job=job, job_name="monthly", outcome=RunOutcome.FAILED, worker_id="w", lock_token="t"
        )
    return job


@pytest.mark.django_db
@override_settings(DJANGO_JOBS={"METRICS_CACHE": 0})
def test_the_view_serves_the_database_counts_to_a_user_with_view_job(client, failing_recurring):
    now("record")
    assert client.get("/jobs/metrics").status_code == 403
    user = User.objects.create_user("ops", password="x")
    client.force_login(user)
    assert client.get("/jobs/metrics").status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="view_job"))
    client.force_login(User.objects.get(pk=user.pk))
    response = client.get("/jobs/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    samples = parse(response.content.decode())
    assert (
        value(samples, "django_jobs_jobs", queue="default", name="record", state="scheduled") == 1
    )
    assert value(samples, "django_jobs_failing_jobs") == 1
    assert value(samples, "django_jobs_late_jobs") == 0
    assert value(samples, "django_jobs_workers_alive") == 0
    # No worker metrics here: the web process runs no jobs.
    assert not [name for name, _ in samples if name.startswith("django_jobs_runs")]


@pytest.mark.django_db
def test_the_view_takes_a_bearer_token_and_counts_are_reused_for_metrics_cache(client):
    bearer = {"Authorization": "Bearer s3cret"}
    record = {"queue": "default", "name": "record", "state": "scheduled"}
    with override_settings(DJANGO_JOBS={"METRICS_TOKEN": "s3cret", "METRICS_CACHE": 0}):
        assert client.get("/jobs/metrics").status_code == 401
        wrong = client.get("/jobs/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = client.get("/jobs/metrics", headers=bearer)
        assert ok.status_code == 200
        assert value(parse(ok.content.decode()), "django_jobs_jobs", **record) == 0
    now("record")
    with override_settings(DJANGO_JOBS={"METRICS_TOKEN": "s3cret", "METRICS_CACHE": 60}):
        # Counted a moment ago: the same counts, without a query.
        again = client.get("/jobs/metrics", headers=bearer)
        assert again.content == ok.content
    with override_settings(DJANGO_JOBS={"METRICS_TOKEN": "s3cret", "METRICS_CACHE": 0}):
        fresh = client.get("/jobs/metrics", headers=bearer)
        assert value(parse(fresh.content.decode()), "django_jobs_jobs", **record) == 1


# Options and the missing library


@pytest.mark.parametrize("port", ["0", "65536", "http", "80.5"])
def test_bad_metrics_ports_are_refused(port):
    with pytest.raises(
        CommandError, match=rf"--metrics-port must be a whole number from 1 to 65535, not '{port}'"
    ):
        call_command("runjobs", "--metrics-port", port, "--burst")


@pytest.mark.django_db(transaction=True)
def test_a_port_in_use_is_a_clear_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(CommandError, match=rf"Cannot serve metrics on 127.0.0.1:{port} \("):
            call_command("runjobs", "--metrics-port", str(port), "--burst")


WITHOUT_LIBRARIES = """
import sys
sys.modules["prometheus_client"] = None  # as if neither extra were installed
sys.modules["opentelemetry"] = None
import django
django.setup()
from django.core.management import CommandError, call_command
from django_jobs import instruments, metrics, tracing
assert metrics.prometheus_client is None and not tracing.ENABLED
assert instruments.watch(None, 0.0) is None  # the executor's whole cost: two checks
call_command("runjobs", "--burst")
try:
    call_command("runjobs", "--metrics-port", "9", "--burst")
except CommandError as exc:
    print("ERROR:", exc)
"""


@pytest.mark.slow
def test_without_the_libraries_jobs_run_and_metrics_say_how_to_install(
    worker_env, transactional_db
):
    jobs = schedule_many([("now", "record", {}) for _ in range(3)])
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_LIBRARIES],
        env=worker_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert Execution.objects.filter(job_id__in=[j.pk for j in jobs]).count() == 3
    assert (
        "ERROR: --metrics-port: Metrics need prometheus_client, which is not installed; run "
        'pip install "django-dbjobs[metrics]".'
    ) in result.stdout
