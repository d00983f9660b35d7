"""Real `runjobs` subprocesses: many workers, kill -9, SIGTERM and SIGINT."""

from __future__ import annotations

import os
import signal

import pytest
from django.db.models import Count

from django_jobs import now, schedule_many
from django_jobs.models import Job, JobRun, JobState, RunOutcome, Worker
from tests.conftest import wait_for
from tests.testapp.models import Execution

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

JOBS = int(os.environ.get("DJANGO_JOBS_TEST_MANY_JOBS", "2000"))


def test_four_workers_run_every_job_exactly_once(start_worker):
    schedule_many(("now", "record", {"i": i}) for i in range(JOBS))
    workers = [
        start_worker(
            "--burst", "--concurrency", "4", "--worker-id", f"w{n}", "--poll-interval", "0.2"
        )
        for n in range(4)
    ]
    for worker in workers:
        assert worker.wait(timeout=300) == 0, worker.output()

    # The unique constraint on (job_id, attempt) would have failed a second run of a job;
    # these counts also prove that none was skipped.
    assert Execution.objects.count() == JOBS
    assert Execution.objects.values("job_id").distinct().count() == JOBS
    assert Job.objects.filter(state=JobState.SUCCEEDED).count() == JOBS
    assert not Job.objects.filter(schedule="").exclude(state=JobState.SUCCEEDED).exists()
    assert JobRun.objects.filter(outcome=RunOutcome.SUCCEEDED).count() == JOBS
    runs_per_job = JobRun.objects.values("job_id").annotate(n=Count("id"))
    assert {row["n"] for row in runs_per_job} == {1}
    # The work really was shared between processes.
    assert Execution.objects.values("worker_pid").distinct().count() >= 2
    assert not Worker.objects.exists()  # each worker removed its row on the way out


def test_killed_worker_job_is_recovered_by_another(start_worker):
    job = now("sleep", {"seconds": 2})
    doomed = start_worker("--worker-id", "doomed", "--lock-lifetime", "1.5")

    def running_on_doomed():
        return Job.objects.filter(pk=job.pk, state=JobState.RUNNING, locked_by="doomed").exists()

    wait_for(running_on_doomed)
    doomed.signal(signal.SIGKILL)
    doomed.wait()

    rescuer = start_worker("--worker-id", "rescuer", "--lock-lifetime", "1.5", "--max-jobs", "1")
    assert rescuer.wait(timeout=60) == 0, rescuer.output()

    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED
    assert job.attempts == 2
    runs = list(JobRun.objects.filter(job=job).order_by("started_at"))
    assert [(r.outcome, r.worker_id, r.attempt) for r in runs] == [
        (RunOutcome.ORPHANED, "doomed", 1),
        (RunOutcome.SUCCEEDED, "rescuer", 2),
    ]
    assert "doomed" in runs[0].error
    assert list(Execution.objects.values_list("job_id", "attempt")) == [(job.pk, 2)]


def test_sigterm_lets_the_running_job_finish_and_leaves_the_rest(start_worker):
    first = now("sleep", {"seconds": 1.5})
    waiting = [now("record"), now("record")]
    worker = start_worker("--worker-id", "term", "--concurrency", "1", "--grace-period", "30")
    wait_for(lambda: Job.objects.filter(pk=first.pk, state=JobState.RUNNING).exists())
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0, worker.output()

    first.refresh_from_db()
    assert first.state == JobState.SUCCEEDED
    assert Execution.objects.filter(job_id=first.pk).count() == 1
    for job in waiting:
        job.refresh_from_db()
        assert job.state == JobState.SCHEDULED and job.locked_by is None
    assert "SIGTERM received" in worker.output()
    assert not Worker.objects.filter(worker_id="term").exists()


def test_sigterm_after_grace_period_hands_the_job_back(start_worker):
    job = now("sleep", {"seconds": 30})
    worker = start_worker("--worker-id", "impatient", "--grace-period", "0.5")
    wait_for(lambda: Job.objects.filter(pk=job.pk, state=JobState.RUNNING).exists())
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0, worker.output()

    job.refresh_from_db()
    # Handed back at once, due now, the interrupted attempt not counted against it.
    assert job.state == JobState.SCHEDULED
    assert job.locked_by is None and job.lock_token is None
    assert job.attempts == 0
    run = JobRun.objects.get(job=job)
    assert run.outcome == RunOutcome.INTERRUPTED
    assert "grace period" in run.error

    # Another worker takes it straight away.
    Job.objects.filter(pk=job.pk).update(data={"seconds": 0.1})
    other = start_worker("--burst")
    assert other.wait(timeout=30) == 0, other.output()
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED


def test_second_sigint_exits_at_once(start_worker):
    job = now("sleep", {"seconds": 30})
    worker = start_worker("--worker-id", "hasty", "--grace-period", "60")
    wait_for(lambda: Job.objects.filter(pk=job.pk, state=JobState.RUNNING).exists())
    worker.signal(signal.SIGINT)
    wait_for(lambda: "SIGINT received" in worker.output(), timeout=10)
    worker.signal(signal.SIGINT)
    assert worker.wait(timeout=5) == 1
    job.refresh_from_db()
    # It left without cleaning up: the lock stays until it expires and another worker recovers.
    assert job.state == JobState.RUNNING and job.locked_by == "hasty"


def test_burst_worker_runs_retries_and_async_jobs(start_worker):
    flaky = now("fail-twice")
    coroutine = now("async-record")
    worker = start_worker("--burst", "--poll-interval", "0.05")
    assert worker.wait(timeout=60) == 0, worker.output()
    flaky.refresh_from_db()
    coroutine.refresh_from_db()
    assert flaky.state == JobState.SUCCEEDED and flaky.attempts == 3
    assert flaky.result == "third time lucky"
    assert [r.outcome for r in JobRun.objects.filter(job=flaky).order_by("attempt")] == [
        RunOutcome.FAILED,
        RunOutcome.FAILED,
        RunOutcome.SUCCEEDED,
    ]
    assert coroutine.state == JobState.SUCCEEDED and coroutine.result == {"async": True}
