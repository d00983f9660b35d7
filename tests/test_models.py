"""The admin/API state changes on Job: each guarded by the state it starts from."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from django_jobs import schedule
from django_jobs.claiming import Failure, recover_stale
from django_jobs.exceptions import InvalidSchedule, JobsError, JobStateError
from django_jobs.models import RECURRING_KEY_PREFIX, Job, JobRun, JobState, db_now_plus
from tests.claiming_support import claim_jobs, finish
from tests.clock_support import db_time

pytestmark = pytest.mark.django_db

LATER = datetime(2031, 3, 4, 5, 6, 7, tzinfo=UTC)


def claim_all(worker_id: str = "w1") -> list[Job]:
    return claim_jobs(worker_id)


def running(name: str = "sleep") -> Job:
    job = schedule(timedelta(seconds=-1), name)
    (claimed,) = claim_all()
    assert claimed.pk == job.pk
    return claimed


def succeeded() -> Job:
    job = running()
    assert finish(job, None, result=1)
    job.refresh_from_db()
    return job


def failed() -> Job:
    job = running()
    assert finish(job, None, failure=Failure("Boom", retry=False))
    job.refresh_from_db()
    assert job.state == JobState.FAILED
    return job


def recurring_row(next_run_at: datetime = LATER) -> Job:
    return Job.objects.create(
        name="monthly",
        data={"k": "v"},
        priority=5,
        queue="billing",
        max_attempts=2,
        schedule="0 3 1 * *",
        timezone="Europe/Paris",
        next_run_at=next_run_at,
        unique_key=RECURRING_KEY_PREFIX + "monthly",
    )


# run_now


def test_run_now_makes_a_waiting_job_due():
    job = schedule("in 1 day", "sleep")
    assert job.run_now() is job
    assert job.state == JobState.SCHEDULED
    assert job.next_run_at <= timezone.now() + timedelta(seconds=1)
    assert [j.pk for j in claim_all()] == [job.pk]


@pytest.mark.parametrize("make", [succeeded, failed])
def test_run_now_runs_a_finished_job_again_from_its_first_attempt(make):
    job = make()
    assert job.attempts == 1
    job.run_now()
    assert job.state == JobState.SCHEDULED and job.attempts == 0
    (claimed,) = claim_all()
    assert claimed.pk == job.pk and claimed.attempts == 1


def test_run_now_of_a_recurring_job_runs_a_one_off_copy():
    job = recurring_row()
    copy = job.run_now()
    assert copy.pk != job.pk
    copy.refresh_from_db()
    assert (copy.name, copy.data, copy.priority, copy.queue, copy.max_attempts) == (
        "monthly",
        {"k": "v"},
        5,
        "billing",
        2,
    )
    assert copy.schedule == "" and not copy.recurring
    assert copy.unique_key is None
    # The recurring row keeps its schedule and its next run.
    job.refresh_from_db()
    assert job.next_run_at == LATER and job.state == JobState.SCHEDULED
    assert job.unique_key == RECURRING_KEY_PREFIX + "monthly"
    assert [j.pk for j in claim_all()] == [copy.pk]


def test_run_now_refuses_a_running_job():
    job = running()
    with pytest.raises(JobStateError, match=r"Cannot run now job sleep #.* while it is running"):
        Job.objects.get(pk=job.pk).run_now()


# retry


def test_retry_only_from_failed():
    job = failed()
    job.retry()
    assert job.state == JobState.SCHEDULED and job.attempts == 0
    assert job.next_run_at <= timezone.now() + timedelta(seconds=1)
    assert [j.pk for j in claim_all()] == [job.pk]

    for make in (succeeded, running, lambda: schedule("in 1 hour", "sleep")):
        other = Job.objects.get(pk=make().pk)
        state = other.state
        with pytest.raises(JobStateError, match=f"Cannot retry job .* while it is {state}"):
            other.retry()
        other.refresh_from_db()
        assert other.state == state


# reschedule


def test_reschedule_moves_a_waiting_job():
    job = schedule("now", "sleep")
    job.reschedule(LATER)
    job.refresh_from_db()
    assert job.next_run_at == LATER and job.state == JobState.SCHEDULED
    assert claim_all() == []


def test_reschedule_of_a_failed_job_starts_its_attempts_again():
    job = failed()
    job.reschedule(LATER)
    assert job.state == JobState.SCHEDULED
    assert job.next_run_at == LATER and job.attempts == 0


def test_reschedule_needs_an_aware_datetime():
    job = schedule("in 1 hour", "sleep")
    before = job.next_run_at
    with pytest.raises(JobsError, match=r"naive datetime datetime\.datetime\(2031, 1, 1, 0, 0\)"):
        job.reschedule(datetime(2031, 1, 1))
    job.refresh_from_db()
    assert job.next_run_at == before


@pytest.mark.parametrize("make", [running, succeeded])
def test_reschedule_refuses_running_and_succeeded_jobs(make):
    job = Job.objects.get(pk=make().pk)
    with pytest.raises(JobStateError, match=f"Cannot reschedule job .* while it is {job.state}"):
        job.reschedule(LATER)
    assert Job.objects.get(pk=job.pk).next_run_at != LATER


# change_schedule


def test_change_schedule_of_a_recurring_job():
    job = recurring_row()
    job.change_schedule("*/10 * * * *", "America/New_York")
    job.refresh_from_db()
    assert (job.schedule, job.timezone) == ("*/10 * * * *", "America/New_York")
    clock = db_time()  # the next run comes from the database's clock
    assert clock < job.next_run_at <= clock + timedelta(minutes=10)
    assert job.next_run_at.minute % 10 == 0 and job.next_run_at.second == 0


@pytest.mark.parametrize(
    ("expression", "tz", "message"),
    [
        ("61 * * * *", "UTC", "Invalid schedule '61 * * * *'"),
        ("every 0 minutes", "UTC", "Invalid schedule 'every 0 minutes'"),
        ("", "UTC", "Invalid schedule ''"),
        ("@daily", "Nowhere/Town", "Unknown timezone 'Nowhere/Town'"),
    ],
)
def test_change_schedule_validates(expression, tz, message):
    job = recurring_row()
    with pytest.raises(InvalidSchedule) as info:
        job.change_schedule(expression, tz)
    assert message in str(info.value)
    job.refresh_from_db()
    assert (job.schedule, job.timezone, job.next_run_at) == ("0 3 1 * *", "Europe/Paris", LATER)


def test_change_schedule_of_a_running_job_keeps_its_run():
    slot = timezone.now() - timedelta(minutes=1)
    job = recurring_row(next_run_at=slot)
    (claimed,) = claim_all()
    job.change_schedule("0 4 * * *", "UTC")
    job.refresh_from_db()
    assert job.schedule == "0 4 * * *"
    assert job.state == JobState.RUNNING and job.lock_token == claimed.lock_token
    assert job.next_run_at == slot
    # When the run ends, the next slot follows the new schedule.
    assert finish(claimed, None, result=None)
    job.refresh_from_db()
    expected = timezone.now().replace(hour=4, minute=0, second=0, microsecond=0)
    if expected <= timezone.now():
        expected += timedelta(days=1)
    assert job.next_run_at == expected


# disable / enable


def test_a_disabled_job_is_not_claimed_until_enabled():
    job = schedule(timedelta(seconds=-1), "sleep")
    job.disable()
    assert not job.enabled
    assert not job.is_due
    assert claim_all() == []
    assert list(Job.objects.disabled()) == [job]
    job.enable()
    assert job.enabled and job.is_due
    assert [j.pk for j in claim_all()] == [job.pk]


def test_disabling_a_running_job_lets_the_run_finish():
    job = running()
    Job.objects.get(pk=job.pk).disable()
    assert finish(job, None, result="done")
    row = Job.objects.get(pk=job.pk)
    assert row.state == JobState.SUCCEEDED and not row.enabled


# cancel


def test_cancel_deletes_a_waiting_job():
    job = schedule("in 1 hour", "sleep")
    job.cancel()
    assert not Job.objects.filter(pk=job.pk).exists()


def test_cancel_refuses_a_running_job():
    job = running()
    row = Job.objects.get(pk=job.pk)
    with pytest.raises(JobStateError, match=r"Cannot cancel job sleep #.* while it is running"):
        row.cancel()
    row.refresh_from_db()
    assert row.state == JobState.RUNNING and row.lock_token == job.lock_token


def test_cancel_keeps_the_run_history():
    job = schedule("in 1 hour", "sleep")
    run = JobRun.objects.create(job=job, job_name="sleep", worker_id="w", lock_token="t")
    job.cancel()
    run.refresh_from_db()
    assert run.job is None and run.job_name == "sleep"


# set_progress


def test_set_progress_clamps_and_is_stored():
    job = running()
    assert job.set_progress(0.4, "step 2 of 5")
    row = Job.objects.get(pk=job.pk)
    assert (row.progress, row.progress_message) == (0.4, "step 2 of 5")
    for given, stored in [(1.7, 1.0), (-0.3, 0.0), (1, 1.0), (None, None)]:
        assert job.set_progress(given)
        assert Job.objects.get(pk=job.pk).progress == stored
    assert job.set_progress(0.5, "x" * 300)
    assert Job.objects.get(pk=job.pk).progress_message == "x" * 255


def test_set_progress_is_fenced_by_the_lock_token():
    job = running()
    Job.objects.filter(pk=job.pk).update(locked_until=db_now_plus(-5))
    assert recover_stale() == 1
    (new,) = claim_all("w2")
    assert new.set_progress(0.2, "new owner")
    assert job.set_progress(0.9, "old owner") is False
    row = Job.objects.get(pk=job.pk)
    assert (row.progress, row.progress_message) == (0.2, "new owner")
    # A job that is not running (never claimed) cannot report progress either.
    waiting = schedule("in 1 hour", "sleep")
    assert waiting.set_progress(0.5) is False


# Querysets named by state


def test_querysets_by_state():
    waiting = schedule("in 1 hour", "sleep")
    due = schedule(timedelta(seconds=-1), "sleep")
    (busy,) = claim_all()
    assert busy.pk == due.pk
    done = succeeded()
    broken = failed()
    rec = recurring_row()
    assert set(Job.objects.scheduled()) == {waiting, rec}
    assert set(Job.objects.running()) == {busy}
    assert set(Job.objects.succeeded()) == {done}
    assert set(Job.objects.failed()) == {broken}
    assert set(Job.objects.recurring()) == {rec}
    assert set(Job.objects.pending()) == {waiting, busy, rec}
    assert not Job.objects.due().exists()
    assert not Job.objects.stale().exists()
    assert busy.runs.count() == 1
