"""Tasks run by real workers: runjobs subprocesses, and an in-process worker for the signals."""

from __future__ import annotations

import os
import threading
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from django_jobs.backend import JobsBackend
from django_jobs.exceptions import UnknownTask
from django_jobs.models import Job, JobRun, JobState, RunOutcome
from django_jobs.retention import PurgeResult, purge
from django_jobs.tasks_compat import (
    TaskResultStatus,
    task_backends,
    task_enqueued,
    task_finished,
    task_started,
)
from django_jobs.worker import Worker
from tests.testapp import tasks

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

BURST = "--burst"


def run_worker(start_worker, *args: str, worker_id: str = "w1") -> None:
    """Run a `runjobs` subprocess until it exits: with --burst when nothing is due."""
    worker = start_worker("--poll-interval", "0.1", "--worker-id", worker_id, *args)
    assert worker.wait(timeout=120) == 0, worker.output()


def test_get_result_from_another_process(start_worker):
    result = tasks.add.enqueue(2, b=3)
    run_worker(start_worker, BURST)

    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 5
    assert result.worker_ids == ["w1"]
    assert result.attempts == 1
    assert result.errors == []
    assert result.enqueued_at <= result.started_at <= result.finished_at
    assert result.last_attempted_at == result.started_at
    job = Job.objects.get(pk=result.id)
    assert (job.state, job.result) == (JobState.SUCCEEDED, 5)

    # A fresh backend object (as in another process) reads the same result.
    fetched = JobsBackend("default", {}).get_result(result.id)
    assert (fetched.status, fetched.return_value, fetched.worker_ids) == (
        TaskResultStatus.SUCCESSFUL,
        5,
        ["w1"],
    )


def test_a_failing_task_records_the_exception_class_and_traceback(start_worker):
    result = tasks.fail.enqueue("boom <b>")
    run_worker(start_worker, BURST)

    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert result.is_finished
    assert result.finished_at is not None
    assert result.attempts == 1  # MAX_ATTEMPTS defaults to 1: no retry
    [error] = result.errors
    assert error.exception_class_path == "builtins.ValueError"
    assert error.exception_class is ValueError
    assert "raise ValueError(message)" in error.traceback
    assert "ValueError: boom <b>" in error.traceback
    with pytest.raises(ValueError, match="Task failed"):
        _ = result.return_value
    run = JobRun.objects.get(job_id=result.id)
    assert (run.outcome, run.error_class) == (RunOutcome.FAILED, "builtins.ValueError")
    assert Job.objects.get(pk=result.id).last_error_class == "builtins.ValueError"

    # Retry from the admin starts a new round: the result is READY again, without old errors.
    Job.objects.get(pk=result.id).retry()
    result.refresh()
    assert (result.status, result.errors, result.worker_ids) == (TaskResultStatus.READY, [], [])

    run_worker(start_worker, BURST, worker_id="w2")
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert result.worker_ids == ["w2"]
    assert len(result.errors) == 1


def test_a_failed_task_keeps_its_exception_class_once_its_runs_are_purged(start_worker):
    result = tasks.fail.enqueue("gone")
    run_worker(start_worker, BURST)
    # An old run of a job that finished just now: retention purges the run, keeps the job.
    JobRun.objects.filter(job_id=result.id).update(started_at=timezone.now() - timedelta(days=40))
    assert purge(timedelta(days=30)) == PurgeResult(jobs=0, runs=1)

    fetched = tasks.fail.get_result(result.id)
    assert (fetched.status, fetched.worker_ids) == (TaskResultStatus.FAILED, [])
    [error] = fetched.errors
    assert error.exception_class_path == "builtins.ValueError"
    assert error.exception_class is ValueError
    assert "ValueError: gone" in error.traceback


def test_an_async_task_runs(start_worker):
    result = tasks.async_add.enqueue(20, 22)
    run_worker(start_worker, BURST)
    result.refresh()
    assert (result.status, result.return_value) == (TaskResultStatus.SUCCESSFUL, 42)


def test_the_context_has_the_attempt_and_the_result(start_worker):
    retrying = tasks.attempt_number.using(backend="retrying")
    succeeds = retrying.enqueue(succeed_on=2)
    gives_up = retrying.enqueue(succeed_on=5)
    # Exactly 2 + 3 runs; --max-jobs (not --burst) so a retry due a moment later is not missed.
    run_worker(start_worker, "--max-jobs", "5")

    succeeds.refresh()
    assert succeeds.status == TaskResultStatus.SUCCESSFUL
    assert succeeds.return_value == {"attempt": 2, "id": succeeds.id, "worker_ids": ["w1", "w1"]}
    assert succeeds.attempts == 2
    [error] = succeeds.errors
    assert error.exception_class_path == "builtins.RuntimeError"
    assert "attempt 1 fails on purpose" in error.traceback
    assert succeeds.started_at < succeeds.last_attempted_at

    gives_up.refresh()
    assert gives_up.status == TaskResultStatus.FAILED
    assert gives_up.attempts == 3  # the "retrying" backend's MAX_ATTEMPTS
    assert [e.traceback.strip().splitlines()[-1] for e in gives_up.errors] == [
        f"RuntimeError: attempt {n} fails on purpose" for n in (1, 2, 3)
    ]


def test_higher_priority_runs_first(start_worker):
    low = tasks.add.using(priority=-10).enqueue(1, 1)
    high = tasks.add.using(priority=50).enqueue(1, 1)
    normal = tasks.add.enqueue(1, 1)
    high_later = tasks.add.using(priority=50).enqueue(1, 1)
    run_worker(start_worker, BURST, "--concurrency", "1")

    # One thread runs them one after another, so they end in the order they ran. (Jobs
    # claimed together, ahead of the free thread, share the claim's start time; their run
    # rows are written in the order the database locked them.)
    runs = JobRun.objects.order_by("finished_at", "pk").values_list("job_id", flat=True)
    assert [str(pk) for pk in runs] == [high.id, high_later.id, normal.id, low.id]


def test_a_deferred_task_waits_for_its_run_after(start_worker):
    later = tasks.add.using(run_after=timezone.now() + timedelta(hours=1)).enqueue(1, 2)
    at_once = tasks.add.enqueue(3, 4)
    run_worker(start_worker, BURST)

    later.refresh()
    at_once.refresh()
    assert later.status == TaskResultStatus.READY
    assert at_once.status == TaskResultStatus.SUCCESSFUL

    # Rescheduled from the admin, it runs; the task still reports the run_after it was given.
    Job.objects.get(pk=later.id).reschedule(timezone.now())
    run_worker(start_worker, BURST, worker_id="w2")
    later.refresh()
    assert (later.status, later.return_value) == (TaskResultStatus.SUCCESSFUL, 3)


def test_queue_names_are_worker_queues(start_worker):
    email = tasks.send_email.enqueue("ada@example.com")
    default = tasks.add.enqueue(1, 2)
    run_worker(start_worker, BURST, "--queue", "emails")

    email.refresh()
    default.refresh()
    assert (email.status, email.return_value) == (
        TaskResultStatus.SUCCESSFUL,
        "sent to ada@example.com",
    )
    assert default.status == TaskResultStatus.READY


def test_a_row_naming_a_function_that_is_not_a_task_is_refused(start_worker, tmp_path):
    # The command really leaves a file when os.system runs it...
    control = tmp_path / "control"
    assert os.system(f"touch {control}") == 0
    assert control.exists()
    # ...so a missing trace file proves the worker never called os.system.
    trace = tmp_path / "trace"
    job = Job.objects.create(
        name="os.system", task_backend="default", data={"args": [f"touch {trace}"], "kwargs": {}}
    )
    run_worker(start_worker, BURST)

    assert not trace.exists()
    job.refresh_from_db()
    assert job.state == JobState.FAILED
    assert job.attempts == 1  # refused for good, not retried
    assert "not a task of Django's tasks framework" in job.last_error
    run = JobRun.objects.get(job=job)
    assert run.error_class == "django_jobs.exceptions.UnknownTask"
    with pytest.raises(UnknownTask):
        task_backends["default"].get_result(str(job.pk))


def run_in_process_worker(max_jobs: int, worker_id: str = "inproc") -> None:
    """Run a Worker for `max_jobs` runs on a thread of this process, so its signals reach us."""
    worker = Worker(max_jobs=max_jobs, concurrency=1, poll_interval=0.1, worker_id=worker_id)
    failures: list[BaseException] = []

    def target() -> None:
        try:
            worker.run()
        except BaseException as exc:
            failures.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(120)
    assert not thread.is_alive()
    assert not failures


def test_the_task_signals_fire(transactional_db):
    received = []

    def recorder(name):
        def receive(sender, task_result, **kwargs):
            received.append(
                (
                    name,
                    sender,
                    task_result.id,
                    task_result.status,
                    task_result.attempts,
                    [e.exception_class_path for e in task_result.errors],
                )
            )

        return receive

    receivers = [
        (task_enqueued, recorder("enqueued")),
        (task_started, recorder("started")),
        (task_finished, recorder("finished")),
    ]
    for signal, receive in receivers:
        signal.connect(receive)
    try:
        ok = tasks.add.enqueue(1, 2)
        bad = tasks.fail.enqueue("no")
        retried = tasks.attempt_number.using(backend="retrying").enqueue(succeed_on=2)
        run_in_process_worker(max_jobs=4)  # 1 + 1 + 2 runs
    finally:
        for signal, receive in receivers:
            signal.disconnect(receive)

    def events(result):
        return [(n, s, st, a, e) for n, s, i, st, a, e in received if i == result.id]

    B, R = JobsBackend, TaskResultStatus
    assert events(ok) == [
        ("enqueued", B, R.READY, 0, []),
        ("started", B, R.RUNNING, 1, []),
        ("finished", B, R.SUCCESSFUL, 1, []),
    ]
    assert events(bad) == [
        ("enqueued", B, R.READY, 0, []),
        ("started", B, R.RUNNING, 1, []),
        ("finished", B, R.FAILED, 1, ["builtins.ValueError"]),
    ]
    # A failed attempt that will be retried is not the end: task_finished comes once.
    assert events(retried) == [
        ("enqueued", B, R.READY, 0, []),
        ("started", B, R.RUNNING, 1, []),
        ("started", B, R.RUNNING, 2, ["builtins.RuntimeError"]),
        ("finished", B, R.SUCCESSFUL, 2, ["builtins.RuntimeError"]),
    ]


def test_a_task_that_exits_is_failed_and_finished(transactional_db):
    # Django's immediate backend records such a task as FAILED; so do the workers, and
    # task_finished is sent (before, the run stayed "running" until its lock expired).
    finished = []

    def receive(sender, task_result, **kwargs):
        finished.append((task_result.id, task_result.status))

    task_finished.connect(receive)
    try:
        result = tasks.exit_now.enqueue(3)
        run_in_process_worker(max_jobs=1)
    finally:
        task_finished.disconnect(receive)
    assert finished == [(result.id, TaskResultStatus.FAILED)]
    result.refresh()
    [error] = result.errors
    assert error.exception_class_path == "builtins.SystemExit"
    assert "sys.exit(code)" in error.traceback
