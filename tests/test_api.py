"""The public API: schedule(), now(), schedule_many(), cancel() and their errors."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from django_jobs import cancel, job, now, schedule, schedule_many
from django_jobs.claiming import Failure
from django_jobs.exceptions import (
    InvalidJobData,
    InvalidJobDefinition,
    InvalidOption,
    InvalidSchedule,
    JobsError,
    JobStateError,
    UnknownJob,
)
from django_jobs.models import Job, JobState
from django_jobs.registry import registry
from tests.claiming_support import claim_jobs, finish
from tests.clock_support import db_time

pytestmark = pytest.mark.django_db

CUSTOM = "api-custom"


@pytest.fixture
def custom_job() -> Iterator[str]:
    """A definition with non-default priority, queue and attempts; removed afterwards."""

    @job(CUSTOM, priority="high", queue="emails", max_attempts=5)
    def custom(j: Job) -> None:
        pass

    yield CUSTOM
    registry.unregister(CUSTOM)


def claim_all(worker_id: str = "api-worker") -> list[Job]:
    return claim_jobs(worker_id)


# "when"


@pytest.mark.parametrize(
    ("when", "delta"),
    [
        ("now", timedelta(0)),
        ("NOW", timedelta(0)),
        (timedelta(minutes=10), timedelta(minutes=10)),
        (timedelta(seconds=-30), timedelta(seconds=-30)),
        ("in 10 seconds", timedelta(seconds=10)),
        ("in 1 minute", timedelta(minutes=1)),
        ("in 5 minutes", timedelta(minutes=5)),
        ("in 2 hours", timedelta(hours=2)),
        ("In 3 Days", timedelta(days=3)),
        ("in 1 week", timedelta(weeks=1)),
    ],
)
def test_relative_when_is_counted_from_now(when, delta):
    before = timezone.now()
    created = schedule(when, "record")
    after = timezone.now()
    created.refresh_from_db()
    assert before + delta <= created.next_run_at <= after + delta


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC), datetime(2031, 5, 6, 7, 8, 9, 123456)),
        # The same instant, given in another zone.
        (
            datetime(2031, 5, 6, 9, 8, 9, tzinfo=ZoneInfo("Europe/Paris")),
            datetime(2031, 5, 6, 7, 8, 9),
        ),
        ("2031-01-02T03:04:05+01:00", datetime(2031, 1, 2, 2, 4, 5)),
        ("2031-01-02T03:04:05Z", datetime(2031, 1, 2, 3, 4, 5)),
        ("  2031-01-02 03:04:05.5-05:00 ", datetime(2031, 1, 2, 8, 4, 5, 500000)),
    ],
)
def test_absolute_when_is_stored_as_that_instant(when, expected):
    created = schedule(when, "record")
    created.refresh_from_db()
    assert created.next_run_at == expected.replace(tzinfo=UTC)


def test_now_makes_a_job_due_at_once():
    created = now("record", {"x": 1})
    created.refresh_from_db()
    assert created.next_run_at <= db_time()  # written by the database's clock, read by it
    assert created.data == {"x": 1}
    assert created.state == JobState.SCHEDULED
    assert created.attempts == 0


def test_data_defaults_to_an_empty_dict_and_keeps_json_types():
    assert schedule("now", "record").data == {}
    data = {"a": [1, 2.5, None, True, "é"], "b": {"c": []}}
    created = schedule("now", "record", data)
    created.refresh_from_db()
    assert created.data == data
    # Tuples are JSON arrays.
    stored = schedule("now", "record", {"t": (1, 2)})
    stored.refresh_from_db()
    assert stored.data == {"t": [1, 2]}


# Options from the definition


def test_options_default_from_the_definition(custom_job):
    created = schedule("now", custom_job)
    created.refresh_from_db()
    assert (created.priority, created.queue, created.max_attempts) == (10, "emails", 5)
    plain = schedule("now", "record")
    plain.refresh_from_db()
    assert (plain.priority, plain.queue, plain.max_attempts) == (0, "default", 1)


def test_options_can_be_overridden(custom_job):
    created = schedule("now", custom_job, priority=-3, queue="bulk", max_attempts=1)
    created.refresh_from_db()
    assert (created.priority, created.queue, created.max_attempts) == (-3, "bulk", 1)
    assert schedule("now", custom_job, priority="lowest").priority == -20


# unique_key


def test_unique_key_returns_the_pending_job():
    first = schedule("in 1 hour", "record", {"n": 1}, unique_key="welcome:42")
    second = schedule("in 2 hours", "record", {"n": 2}, unique_key="welcome:42")
    assert second.pk == first.pk
    second.refresh_from_db()
    # The first call wins; the second changes nothing.
    assert second.data == {"n": 1}
    assert Job.objects.count() == 1
    # Another key is another job.
    assert schedule("in 1 hour", "record", unique_key="welcome:43").pk != first.pk


def test_unique_key_is_held_while_running_and_released_when_finished():
    first = schedule(timedelta(seconds=-1), "record", unique_key="report")
    (claimed,) = claim_all()
    assert claimed.pk == first.pk
    # Running is still pending: no duplicate.
    assert schedule("now", "record", unique_key="report").pk == first.pk

    assert finish(claimed, None, result=None)
    first.refresh_from_db()
    assert first.state == JobState.SUCCEEDED
    assert first.unique_key is None

    again = schedule("now", "record", unique_key="report")
    assert again.pk != first.pk
    assert again.unique_key == "report"
    assert Job.objects.count() == 2


def test_unique_key_is_released_when_the_job_fails_for_good():
    first = schedule(timedelta(seconds=-1), "record", unique_key="once")
    (claimed,) = claim_all()
    assert finish(claimed, None, failure=Failure("boom"), retry_delay=timedelta(seconds=1))
    first.refresh_from_db()
    assert first.state == JobState.FAILED  # "record" has max_attempts=1
    assert schedule("now", "record", unique_key="once").pk != first.pk


# schedule_many


def test_schedule_many_creates_every_job(custom_job):
    created = schedule_many(
        [
            ("now", "record", {"i": 0}),
            (timedelta(hours=1), custom_job, None),
            ("2031-01-01T00:00:00+00:00", "sleep", {"seconds": 1}),
        ]
    )
    assert len(created) == 3
    rows = {j.name: j for j in Job.objects.all()}
    assert set(rows) == {"record", custom_job, "sleep"}
    assert rows["record"].data == {"i": 0}
    assert rows[custom_job].data == {}
    assert (rows[custom_job].priority, rows[custom_job].queue) == (10, "emails")
    assert rows["sleep"].next_run_at == datetime(2031, 1, 1, tzinfo=UTC)


def test_schedule_many_checks_everything_before_inserting():
    jobs = [("now", "record", {"i": i}) for i in range(3)] + [("now", "no-such-job", None)]
    with pytest.raises(UnknownJob, match="'no-such-job'"):
        schedule_many(jobs)
    assert not Job.objects.exists()


def test_schedule_many_of_nothing():
    assert schedule_many([]) == []


# cancel


def test_cancel_by_job_and_by_id():
    a, b = schedule("in 1 hour", "record"), schedule("in 1 hour", "record")
    assert cancel(a) == 1
    assert cancel(b.pk) == 1
    assert not Job.objects.exists()


def test_cancel_by_unique_key_and_by_name():
    keyed = schedule("in 1 hour", "record", unique_key="k1")
    schedule("in 1 hour", "sleep")
    schedule("in 2 hours", "sleep")
    assert cancel(unique_key="k1") == 1
    assert not Job.objects.filter(pk=keyed.pk).exists()
    assert cancel(unique_key="k1") == 0
    assert cancel(name="sleep") == 2
    assert not Job.objects.exists()
    # The key is free again.
    assert schedule("in 1 hour", "record", unique_key="k1").pk != keyed.pk


def test_cancel_refuses_a_running_job():
    running = schedule(timedelta(seconds=-1), "record")
    claim_all()
    with pytest.raises(JobStateError, match="running"):
        cancel(running)
    with pytest.raises(JobStateError, match="running"):
        cancel(running.pk)
    # By name, running jobs are left alone and only waiting ones go.
    waiting = schedule("in 1 hour", "record")
    assert cancel(name="record") == 1
    assert list(Job.objects.values_list("pk", "state")) == [(running.pk, JobState.RUNNING)]
    assert not Job.objects.filter(pk=waiting.pk).exists()


def test_cancel_refuses_a_finished_job():
    done = schedule(timedelta(seconds=-1), "record")
    (claimed,) = claim_all()
    finish(claimed, None)
    with pytest.raises(JobStateError, match="succeeded"):
        cancel(done)
    assert Job.objects.filter(pk=done.pk).exists()


def test_cancel_needs_something_to_cancel():
    with pytest.raises(JobStateError, match="needs a job"):
        cancel()


# Bad input: each error is a JobsError that names the bad value.


@pytest.mark.parametrize("when", ["tomorrow", "in 5 fortnights", "in -5 minutes", "", "2031-13-01"])
def test_unparsable_when(when):
    with pytest.raises(InvalidSchedule) as info:
        schedule(when, "record")
    assert repr(when) in str(info.value)
    assert not Job.objects.exists()


@pytest.mark.parametrize("when", [42, None, 1.5])
def test_when_of_the_wrong_type(when):
    with pytest.raises(InvalidSchedule, match=re.escape(f"when={when!r}")):
        schedule(when, "record")


def test_naive_datetime_is_refused():
    naive = datetime(2031, 1, 2, 3, 4, 5)
    with pytest.raises(InvalidSchedule, match="2031-01-02 03:04:05' has no timezone"):
        schedule(naive, "record")
    with pytest.raises(InvalidSchedule, match="'2031-01-02T03:04:05' has no timezone"):
        schedule("2031-01-02T03:04:05", "record")
    assert not Job.objects.exists()


def test_data_that_is_not_json_names_the_key_path():
    data = {"user": {"name": "Ann", "joined": datetime(2020, 1, 1, tzinfo=UTC)}}
    with pytest.raises(InvalidJobData, match=r"data\['user'\]\['joined'\] is a datetime"):
        schedule("now", "record", data)
    with pytest.raises(InvalidJobData, match=r"data\['ids'\]\[2\] is a Decimal"):
        schedule("now", "record", {"ids": [1, 2, Decimal("3")]})
    with pytest.raises(InvalidJobData, match=r"data is a set"):
        schedule("now", "record", {1, 2})
    assert not Job.objects.exists()


def test_non_string_dict_key_is_refused():
    with pytest.raises(InvalidJobData, match=r"data\['a'\] has the key 1 of type int.*'1'"):
        schedule("now", "record", {"a": {1: "one"}})


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused(number):
    with pytest.raises(InvalidJobData, match=rf"data\['x'\] is {number!r}"):
        schedule("now", "record", {"x": number})


def test_unknown_job_name_lists_the_registered_names():
    with pytest.raises(UnknownJob) as info:
        schedule("now", "recrod")
    message = str(info.value)
    assert "'recrod'" in message
    for name in ("record", "sleep", "fail-twice", "monthly"):
        assert name in message
    with pytest.raises(UnknownJob, match="'nope'"):
        now("nope")


@pytest.mark.parametrize("priority", ["urgent", 101, -101, True, 1.5])
def test_bad_priority(priority):
    with pytest.raises(InvalidOption, match=re.escape(f"Invalid priority {priority!r}")):
        schedule("now", "record", priority=priority)


@pytest.mark.parametrize("queue", ["", "q" * 101, 5])
def test_bad_queue(queue):
    with pytest.raises(InvalidOption, match=re.escape(f"Invalid queue {queue!r}")):
        schedule("now", "record", queue=queue)


@pytest.mark.parametrize("max_attempts", [0, -1, "3", True, 2.0, 1001])
def test_bad_max_attempts(max_attempts):
    with pytest.raises(InvalidOption, match=re.escape(f"max_attempts={max_attempts!r}")):
        schedule("now", "record", max_attempts=max_attempts)


def test_every_error_is_a_jobs_error():
    for exc in (InvalidJobData, InvalidJobDefinition, InvalidSchedule, JobStateError, UnknownJob):
        assert issubclass(exc, JobsError)
    # Options are one kind of error whether @job or schedule() is given them.
    assert issubclass(InvalidJobDefinition, InvalidOption)
    assert issubclass(InvalidOption, JobsError) and issubclass(InvalidOption, ValueError)
