"""History retention: parse_age, purge(), `manage.py purgejobs` and RETENTION."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.utils import timezone

from django_jobs import job
from django_jobs.checks import check_retention_and_notify
from django_jobs.models import Job, JobRun, JobState, RunOutcome
from django_jobs.registry import registry
from django_jobs.retention import InvalidAge, parse_age, purge
from django_jobs.worker import Worker


@pytest.mark.parametrize(
    "text, age",
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("90m", timedelta(minutes=90)),
        ("45s", timedelta(seconds=45)),
        ("2w", timedelta(weeks=2)),
        (" 1.5d ", timedelta(days=1.5)),
        (3600, timedelta(hours=1)),
        (timedelta(days=7), timedelta(days=7)),
    ],
)
def test_parse_age(text, age):
    assert parse_age(text) == age


@pytest.mark.parametrize("text", ["30", "30 days", "d", "-1d", "0d", "", True, None, "1y"])
def test_parse_age_refuses_what_it_cannot_read(text):
    with pytest.raises(InvalidAge, match="Invalid age"):
        parse_age(text)


def old(days: float) -> timezone.datetime:
    return timezone.now() - timedelta(days=days)


def finished(state: str, days: float, *, runs: int = 1, schedule: str = "") -> Job:
    job = Job.objects.create(
        name="record",
        state=state,
        schedule=schedule,
        next_run_at=timezone.now() + timedelta(days=1) if schedule else None,
        last_finished_at=old(days),
    )
    for attempt in range(1, runs + 1):
        JobRun.objects.create(
            job=job,
            job_name=job.name,
            attempt=attempt,
            outcome=RunOutcome.SUCCEEDED if state == JobState.SUCCEEDED else RunOutcome.FAILED,
            worker_id="w1",
            lock_token="t",
            started_at=old(days),
            finished_at=old(days),
        )
    return job


@pytest.fixture
def history():
    """Old and recent history, and rows purging must never touch."""
    return {
        "old_succeeded": finished(JobState.SUCCEEDED, 40, runs=2),
        "old_failed": finished(JobState.FAILED, 31, runs=3),
        "old_cancelled": finished(JobState.CANCELLED, 50, runs=0),
        "recent": finished(JobState.SUCCEEDED, 1),
        "recurring": finished(JobState.SCHEDULED, 40, runs=2, schedule="every 5 minutes"),
        "pending": Job.objects.create(name="record", next_run_at=old(60)),
        "running": Job.objects.create(
            name="record", state=JobState.RUNNING, last_finished_at=old(60)
        ),
    }


@pytest.mark.django_db
def test_purge_deletes_old_history_in_batches_and_keeps_the_rest(history):
    JobRun.objects.create(
        job=history["running"],
        job_name="record",
        worker_id="w1",
        lock_token="t",
        started_at=old(35),  # a run still going is never deleted, however old
    )
    result = purge(timedelta(days=30), batch_size=2)
    assert (result.jobs, result.runs) == (3, 7)
    kept = set(Job.objects.values_list("pk", flat=True))
    assert kept == {history[k].pk for k in ("recent", "recurring", "pending", "running")}
    assert list(JobRun.objects.order_by("pk").values_list("job_id", "outcome")) == [
        (history["recent"].pk, RunOutcome.SUCCEEDED),
        (history["running"].pk, RunOutcome.RUNNING),
    ]
    # Nothing is left to purge.
    again = purge(timedelta(days=30))
    assert (again.jobs, again.runs) == (0, 0)


@pytest.mark.django_db
def test_dry_run_only_counts(history):
    result = purge(timedelta(days=30), dry_run=True)
    assert (result.jobs, result.runs) == (3, 7)
    assert Job.objects.count() == 7 and JobRun.objects.count() == 8


@pytest.mark.django_db
def test_purgejobs_command(history):
    out = StringIO()
    call_command("purgejobs", "--older-than", "30d", "--dry-run", stdout=out)
    assert out.getvalue().strip() == "Would delete 3 finished job(s) and 7 run(s) older than 30d."
    out = StringIO()
    call_command("purgejobs", "--older-than", "30d", "--batch-size", "1", stdout=out)
    assert out.getvalue().strip() == "Deleted 3 finished job(s) and 7 run(s) older than 30d."
    assert Job.objects.count() == 4


@pytest.mark.django_db
def test_purgejobs_takes_the_retention_setting(history):
    with override_settings(DJANGO_JOBS={"RETENTION": "45d"}):
        out = StringIO()
        call_command("purgejobs", stdout=out)
    assert out.getvalue().strip() == "Deleted 1 finished job(s) and 0 run(s) older than 45d."


@pytest.mark.django_db
@pytest.mark.parametrize(
    "args, message",
    [
        ([], "Say how old history must be to go, e.g. --older-than 30d"),
        (["--older-than", "a month"], "--older-than: Invalid age 'a month'. Use a number and"),
        (["--older-than", "30d", "--batch-size", "0"], "--batch-size must be 1 or more, not 0."),
    ],
)
def test_purgejobs_refuses_bad_input(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("purgejobs", *args)


@pytest.mark.parametrize(
    "value, error",
    [
        ("30d", None),
        (timedelta(days=1), None),
        (None, None),
        ("soon", "django_jobs.E006"),
        (-5, "django_jobs.E006"),
    ],
)
def test_retention_setting_is_checked(value, error):
    with override_settings(DJANGO_JOBS={"RETENTION": value}):
        errors = check_retention_and_notify()
    assert [e.id for e in errors] == ([error] if error else [])


def test_notify_setting_is_checked():
    with override_settings(DJANGO_JOBS={"NOTIFY": "yes"}):
        (error,) = check_retention_and_notify()
    assert error.id == "django_jobs.E007"
    assert "DJANGO_JOBS['NOTIFY'] is 'yes'." in error.msg


@pytest.mark.django_db
def test_a_worker_applies_the_retention_setting(history):
    worker = Worker(worker_id="retainer")
    assert worker.apply_retention() == 0  # no RETENTION: the history stays
    assert Job.objects.count() == 7
    with override_settings(DJANGO_JOBS={"RETENTION": "30d"}):
        assert worker.apply_retention() == 3 + 7
    assert Job.objects.count() == 4


def finished_run(name: str, hours: float) -> JobRun:
    started = timezone.now() - timedelta(hours=hours)
    return JobRun.objects.create(
        job_name=name,
        outcome=RunOutcome.SUCCEEDED,
        worker_id="w1",
        lock_token="t",
        started_at=started,
        finished_at=started,
    )


@pytest.mark.django_db
def test_purge_keeps_the_runs_a_rate_limit_still_counts():
    # A rate limit counts the starts of its name within its period from the runs: a
    # retention shorter than the period must not delete them, or the limit lets more in.
    job("purge-daily", rate_limit="5/d")(lambda j: None)
    try:
        counted = finished_run("purge-daily", hours=2)
        finished_run("purge-daily", hours=25)  # older than its period: goes
        finished_run("record", hours=2)  # no rate limit: goes
        assert purge(timedelta(hours=1), dry_run=True).runs == 2
        assert purge(timedelta(hours=1)).runs == 2
        assert list(JobRun.objects.values_list("pk", flat=True)) == [counted.pk]
    finally:
        registry.unregister("purge-daily")
