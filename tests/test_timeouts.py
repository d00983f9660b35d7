"""Timeouts and cancelling a running job, with real `runjobs` processes (docs/controls.md)."""

from __future__ import annotations

import time

import pytest
from django.db import connection

from django_jobs import cancel, now
from django_jobs.exceptions import InvalidOption, JobStateError
from django_jobs.models import Job, JobRun, JobState, RunOutcome
from django_jobs.states import STOP_TIMEOUT
from django_jobs.worker.stopping import Deadlines, StopRequest
from tests.conftest import wait_for
from tests.testapp.models import Execution

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def runs_of(job: Job) -> list[JobRun]:
    return list(JobRun.objects.filter(job_id=job.pk).order_by("attempt"))


def ended(job: Job, state: str, timeout: float = 30) -> Job:
    wait_for(lambda: Job.objects.filter(pk=job.pk, state=state).exists(), timeout=timeout)
    return Job.objects.get(pk=job.pk)


# Timeouts


def test_a_sync_job_that_checks_stops_at_its_timeout_and_is_retried(start_worker):
    job = now("cooperative-timeout")
    other = now("sleep", {"seconds": 2.5})  # longer than the timeout, and has none
    start_worker("--concurrency", "2", "--poll-interval", "0.2")
    job = ended(job, JobState.FAILED)
    runs = runs_of(job)
    assert [r.outcome for r in runs] == [RunOutcome.TIMED_OUT, RunOutcome.TIMED_OUT]
    for run in runs:
        assert run.error.startswith("Timed out: still running after its timeout of 1s")
        assert run.error_class == "django_jobs.exceptions.JobStopped"
        assert "JobStopped" in run.traceback  # what check_stop() raised
        assert 1.0 <= run.duration.total_seconds() < 2.5
    assert Execution.objects.filter(job_id=job.pk).count() == 2  # retried once (max_attempts)
    assert job.failure_count == 2 and job.last_error.startswith("Timed out")
    assert ended(other, JobState.SUCCEEDED)  # nothing else disturbed


def test_a_sync_job_that_never_looks_runs_to_its_end_and_is_still_timed_out(start_worker):
    job = now("ignores-timeout", {"seconds": 1.5})
    start_worker("--poll-interval", "0.2")
    job = ended(job, JobState.FAILED)
    (run,) = runs_of(job)
    assert run.outcome == RunOutcome.TIMED_OUT
    assert "did not stop when asked; its result was dropped" in run.error
    assert run.duration.total_seconds() >= 1.5  # a thread cannot be killed
    assert job.result is None
    assert Execution.objects.filter(job_id=job.pk).count() == 1


def test_an_async_job_is_cancelled_at_its_timeout(start_worker):
    job = now("async-timeout")
    start_worker("--poll-interval", "0.2")
    job = ended(job, JobState.FAILED)
    (run,) = runs_of(job)
    assert run.outcome == RunOutcome.TIMED_OUT
    assert 0.5 <= run.duration.total_seconds() < 3  # not the 30 s it sleeps
    assert "CancelledError" in run.traceback


def test_process_isolation_kills_a_job_at_its_timeout_and_runs_the_others(start_worker):
    stuck = now("hard-timeout")
    fine = now("record")
    failing = now("fails-in-process")
    worker = start_worker("--isolation", "process", "--concurrency", "2", "--poll-interval", "0.2")
    stuck = ended(stuck, JobState.FAILED)
    (run,) = runs_of(stuck)
    assert run.outcome == RunOutcome.TIMED_OUT, run.error
    assert 1.0 <= run.duration.total_seconds() < 4  # killed, not the 30 s it sleeps
    assert ended(fine, JobState.SUCCEEDED)
    failing = ended(failing, JobState.FAILED)
    (failed_run,) = runs_of(failing)
    # The error as it was raised in the child: its class, message and traceback.
    assert failed_run.error_class == "builtins.ValueError"
    assert failed_run.error.startswith("ValueError: failed in process ")
    assert "fails_in_process" in failed_run.traceback
    pids = set(Execution.objects.values_list("worker_pid", flat=True))
    assert worker.proc.pid not in pids and len(pids) == 3  # each ran in a process of its own
    # The stuck job's child wrote its row well within its 1 s: the fork server had loaded the
    # project when the worker started, not within the first job's timeout (found 2026-12-01,
    # when that load took about a second and the child was killed before its first line).
    assert Execution.objects.filter(job_id=stuck.pk).exists()
    assert worker.proc.poll() is None


# Cancelling a running job


def test_cancel_running_stops_the_job_and_records_who_asked(start_worker):
    postgres = connection.vendor == "postgresql"
    job = now("until-cancelled")
    worker = start_worker(
        "--concurrency", "2", "--poll-interval", "30" if postgres else "0.5", "--lock-lifetime", "6"
    )
    wait_for(lambda: Execution.objects.filter(job_id=job.pk).exists())
    time.sleep(0.3)
    with pytest.raises(JobStateError, match="while it is running"):
        cancel(job.pk)  # without running=True a running job is left alone
    asked = time.monotonic()
    assert cancel(job.pk, running=True, by="ops") == 1
    job = ended(job, JobState.CANCELLED)
    took = time.monotonic() - asked
    (run,) = runs_of(job)
    assert run.outcome == RunOutcome.CANCELLED
    assert run.error.startswith("Cancelled by ops while running")
    assert Execution.objects.filter(job_id=job.pk).count() == 1  # not retried
    # PostgreSQL: NOTIFY reaches the idle claim loop at once; elsewhere the next heartbeat
    # (a third of the 6 s lock) finds it.
    assert took < (1.0 if postgres else 2 + 1.0), took
    assert worker.proc.poll() is None


def test_a_job_that_ignores_the_cancel_keeps_its_lock_until_it_ends(start_worker):
    job = now("until-cancelled", {"ignore": True, "seconds": 3})
    start_worker("--poll-interval", "0.2", "--lock-lifetime", "1.5")
    wait_for(lambda: Execution.objects.filter(job_id=job.pk).exists())
    cancel(job, running=True, by="ops")
    time.sleep(2)  # more than its lock lifetime: the heartbeat keeps the lock
    held = Job.objects.get(pk=job.pk)
    assert held.state == JobState.RUNNING and held.cancel_requested_by == "ops"
    assert held.cancel_requested_at is not None
    job = ended(held, JobState.CANCELLED)
    (run,) = runs_of(job)
    assert run.outcome == RunOutcome.CANCELLED
    assert "did not stop when asked" in run.error
    assert not JobRun.objects.filter(outcome=RunOutcome.ORPHANED).exists()  # never recovered


def test_cancel_running_by_name_stops_the_running_and_deletes_the_waiting(start_worker):
    running = now("until-cancelled")
    start_worker("--concurrency", "1", "--poll-interval", "0.2", "--lock-lifetime", "3")
    wait_for(lambda: Execution.objects.filter(job_id=running.pk).exists())
    waiting = now("until-cancelled")
    assert cancel(name="until-cancelled", running=True, by="script") == 2
    assert not Job.objects.filter(pk=waiting.pk).exists()
    ended(running, JobState.CANCELLED)
    assert runs_of(running)[0].error.startswith("Cancelled by script")


def test_cancel_checks_its_new_options():
    job = now("record")
    with pytest.raises(InvalidOption, match="Invalid running='yes'"):
        cancel(job, running="yes")  # type: ignore[arg-type]
    with pytest.raises(InvalidOption, match="Invalid by="):
        cancel(job, running=True, by="x" * 151)
    assert Job.objects.filter(pk=job.pk).exists()


# The deadline keeper, without a worker


def test_deadlines_stop_a_run_once_and_never_after_it_ended():
    deadlines = Deadlines()
    late, done = StopRequest(), StopRequest()
    deadlines.add(0.05, late)
    deadlines.add(0.05, done)
    assert done.close() == ""  # it ended before its deadline
    deadlines.discard(done)
    assert late.wait(2) and late.reason == STOP_TIMEOUT
    time.sleep(0.1)
    assert not done.requested
    assert late.close() == STOP_TIMEOUT
    assert not late.request("cancel")  # the first reason stays


def test_deadlines_forget_ended_runs():
    deadlines = Deadlines()
    stops = [StopRequest() for _ in range(Deadlines.COMPACT_AFTER + 10)]
    for stop in stops:
        deadlines.add(3600, stop)
        stop.close()
        deadlines.discard(stop)
    assert len(deadlines._heap) < 20
