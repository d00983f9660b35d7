"""`manage.py runjobs`: argument validation, --burst, --queue and --max-jobs."""

from __future__ import annotations

import signal
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command

from django_jobs import schedule
from django_jobs.models import Job, JobState, Worker
from tests.testapp.models import Execution


def due(name: str = "record", **options) -> Job:
    return schedule(timedelta(seconds=-1), name, **options)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--concurrency", "0"], "--concurrency must be a whole number from 1 to 1000, not '0'."),
        (["--concurrency", "-1"], "--concurrency must be a whole number from 1 to 1000, not '-1'."),
        (
            ["--concurrency", "abc"],
            "--concurrency must be a whole number from 1 to 1000, not 'abc'",
        ),
        (["--concurrency", "2.5"], "not '2.5'"),
        (
            ["--poll-interval", "0"],
            "--poll-interval must be a number of seconds above 0 and at most 3600 (1 hour), "
            "not '0'.",
        ),
        (["--poll-interval", "-0.5"], "must be a number of seconds above 0 and at most 3600"),
        (["--poll-interval", "nan"], "not 'nan'"),
        (["--max-jobs", "0"], "--max-jobs must be a whole number from 1 to 1000000000, not '0'."),
        (["--max-jobs", "many"], "not 'many'"),
        (
            ["--lock-lifetime", "0"],
            "--lock-lifetime must be a number of seconds from 1 to 86400 (1 day), not '0'.",
        ),
        (
            ["--grace-period", "-1"],
            "--grace-period must be a number of seconds from 0 to 86400 (1 day), not '-1'.",
        ),
        (["--worker-id", ""], "--worker-id must not be empty (got '')"),
        (["--worker-id", "   "], "--worker-id must not be empty (got '   ')"),
        (["--queue", ""], "Invalid queue ''"),
        (["--queue", "q" * 101], "Invalid queue 'qqq"),
    ],
)
@pytest.mark.django_db
def test_bad_arguments_are_refused_naming_the_value(args, message):
    with pytest.raises(CommandError) as info:
        call_command("runjobs", *args)
    assert message in str(info.value)
    assert not Worker.objects.exists()  # refused before the worker started


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"concurrency": 0}, "--concurrency must be a whole number from 1 to 1000, not '0'."),
        ({"concurrency": -3}, "not '-3'"),
        ({"concurrency": True}, "not 'True'"),
        (
            {"poll_interval": 0},
            "--poll-interval must be a number of seconds above 0 and at most 3600 (1 hour), "
            "not '0'.",
        ),
        ({"max_jobs": 0}, "--max-jobs must be a whole number from 1 to 1000000000, not '0'."),
        ({"worker_id": ""}, "--worker-id must not be empty"),
    ],
)
@pytest.mark.django_db
def test_keyword_options_of_call_command_are_checked_too(options, message):
    # call_command() passes keyword options to handle() without argparse's type checks.
    with pytest.raises(CommandError) as info:
        call_command("runjobs", **options)
    assert message in str(info.value)
    assert not Worker.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_burst_runs_the_due_jobs_and_exits():
    jobs = [due() for _ in range(3)] + [due("async-record")]
    later = schedule("in 1 hour", "record")
    call_command("runjobs", "--burst", "--concurrency", "2", "--poll-interval", "0.05")
    for job in jobs:
        job.refresh_from_db()
        assert job.state == JobState.SUCCEEDED, job
    assert sorted(Execution.objects.values_list("job_id", flat=True)) == sorted(j.pk for j in jobs)
    later.refresh_from_db()
    assert later.state == JobState.SCHEDULED and later.attempts == 0
    assert not Worker.objects.exists()  # the worker removed its row on the way out


@pytest.mark.django_db(transaction=True)
def test_burst_with_nothing_due_exits_at_once():
    call_command("runjobs", burst=True, poll_interval=0.05, worker_id="idle")
    assert not Execution.objects.exists()
    assert not Worker.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_an_in_process_worker_puts_the_signal_handlers_back():
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    call_command("runjobs", "--burst", "--poll-interval", "0.05")
    assert {signum: signal.getsignal(signum) for signum in before} == before


@pytest.mark.django_db(transaction=True)
def test_max_jobs_runs_exactly_that_many():
    jobs = [due() for _ in range(4)]
    call_command("runjobs", "--max-jobs", "2", "--poll-interval", "0.05")
    states = sorted(Job.objects.filter(pk__in=[j.pk for j in jobs]).values_list("state", flat=True))
    assert states == [JobState.SCHEDULED] * 2 + [JobState.SUCCEEDED] * 2
    assert Execution.objects.count() == 2
    # Highest priority and earliest due first: the two oldest ran.
    assert set(Execution.objects.values_list("job_id", flat=True)) == {jobs[0].pk, jobs[1].pk}


@pytest.mark.django_db(transaction=True)
def test_max_jobs_with_several_threads():
    for _ in range(5):
        due()
    call_command("runjobs", "--max-jobs", "3", "--concurrency", "4", "--poll-interval", "0.05")
    assert Execution.objects.count() == 3
    assert Job.objects.filter(name="record", state=JobState.SCHEDULED).count() == 2


@pytest.mark.slow
def test_queue_only_runs_that_queue(start_worker):
    mine = due(queue="reports")
    also_mine = due(queue="exports")
    other = due(queue="emails")
    default = due()

    worker = start_worker("--burst", "--queue", "reports", "--poll-interval", "0.05")
    assert worker.wait(timeout=60) == 0, worker.output()
    assert list(Execution.objects.values_list("job_id", flat=True)) == [mine.pk]

    # --queue repeats.
    worker = start_worker(
        "--burst", "--queue", "exports", "--queue", "emails", "--poll-interval", "0.05"
    )
    assert worker.wait(timeout=60) == 0, worker.output()
    assert set(Execution.objects.values_list("job_id", flat=True)) == {
        mine.pk,
        also_mine.pk,
        other.pk,
    }
    default.refresh_from_db()
    assert default.state == JobState.SCHEDULED and default.attempts == 0
