"""Every value a user can pass is checked against its bound before it reaches the database.

One regression test per input that used to reach the driver (or overflow, or recurse) at each
entry point: the API, @job, the admin forms, the tasks backend, `runjobs` and the settings
checks. Each refusal is a django_jobs error (or CommandError, form error, check Error) that
quotes the value, and nothing is written.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.test import Client, override_settings

from django_jobs import cancel, job, now, schedule, schedule_many
from django_jobs.backend import JobsBackend
from django_jobs.checks import check_settings
from django_jobs.exceptions import (
    InvalidJobData,
    InvalidJobDefinition,
    InvalidSchedule,
    JobsError,
)
from django_jobs.models import Job, Worker
from django_jobs.registry import registry
from django_jobs.sync import recurring_key, sync_recurring
from tests.testapp import tasks

from .admin_support import (
    add_url,
    bulk,
    changelist_url,
    future,
    job_url,
    make_job,
    reschedule_url,
)

pytestmark = pytest.mark.django_db

PLUS_ONE = timezone(timedelta(hours=1))
DEEP = 100_000  # far past Python's recursion limit


def nested(depth: int, leaf: Any = 1) -> Any:
    """A list `depth` levels deep, built without recursion."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def nested_text(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


@contextmanager
def nothing_written() -> Iterator[None]:
    before = Job.objects.count()
    yield
    assert Job.objects.count() == before


@pytest.fixture(autouse=True)
def forget_new_definitions() -> Iterator[None]:
    """Unregister whatever a test registers, so other tests see the usual registry."""
    before = set(registry.names())
    yield
    for name in set(registry.names()) - before:
        registry.unregister(name)


def shown(value: Any) -> str:
    """How a message quotes the value: its repr, or the ISO text of a datetime."""
    if isinstance(value, datetime):
        return value.isoformat()
    return repr(value)


def refused(call: Callable[[], object], value: Any, error: type[Exception] = JobsError) -> str:
    """Run call(), expecting `error` quoting `value`, with no job row written; the message."""
    with nothing_written(), pytest.raises(error) as info:
        call()
    message = str(info.value)
    assert shown(value)[:60] in message, message
    assert message.endswith("."), message
    return message


# "when": the instant must lie within MIN_WHEN .. MAX_WHEN

BAD_WHENS: list[Any] = [
    datetime(1, 1, 1, tzinfo=PLUS_ONE),  # year 0 in UTC: PostgreSQL cannot read it back
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-12:00",  # year 10000 in UTC
    datetime(9999, 12, 31, 23, 59, tzinfo=UTC),  # year 10000 in any timezone east of UTC
    "1899-12-31T23:59:59Z",
    "9999-12-30T00:00:01Z",
    timedelta(days=10**8),
    -timedelta(days=10**6),
    "in 99999999999 days",
    "in 999999999 days",
    "in 600000 weeks",
]


@pytest.mark.parametrize("when", BAD_WHENS)
def test_when_out_of_range_is_refused_by_schedule(when: Any) -> None:
    message = refused(lambda: schedule(when, "record"), when, InvalidSchedule)
    assert "1900-01-01" in message and "9999-12-30" in message


@pytest.mark.parametrize("when", BAD_WHENS[:3])
def test_when_out_of_range_is_refused_by_schedule_many(when: Any) -> None:
    refused(
        lambda: schedule_many([("now", "record", None), (when, "record", None)]),
        when,
        InvalidSchedule,
    )


@pytest.mark.parametrize("text", ["1900-01-01T00:00:00Z", "9999-12-30T00:00:00Z"])
def test_the_bounds_themselves_are_stored_and_shown(text: str, admin_client: Client) -> None:
    created = schedule(text, "record")
    stored = Job.objects.get(pk=created.pk)
    assert stored.next_run_at == datetime.fromisoformat(text)
    assert admin_client.get(job_url(stored)).status_code == 200
    assert admin_client.get(changelist_url()).status_code == 200


@pytest.mark.parametrize("minutes", [16 * 60, 18 * 60 + 45, -(21 * 60 + 3), 1439, -1439])
def test_offsets_postgresql_refuses_are_stored_as_utc(minutes: int, admin_client: Client) -> None:
    # PostgreSQL refuses UTC offsets of 16 hours or more ("time zone displacement out of range").
    when = datetime(2030, 7, 27, 4, 45, tzinfo=timezone(timedelta(minutes=minutes)))
    created = schedule(when, "record")
    assert Job.objects.get(pk=created.pk).next_run_at == when
    result = tasks.add.using(run_after=when).enqueue(1, 2)
    assert Job.objects.get(pk=result.id).next_run_at == when
    target = make_job(next_run_at=future(days=5))
    response = admin_client.post(reschedule_url(target), {"when": when.isoformat()})
    assert response.status_code == 302
    assert Job.objects.get(pk=target.pk).next_run_at == when
    response = post_create(admin_client, when=when.isoformat())
    assert response.status_code == 302
    assert Job.objects.order_by("-pk").first().next_run_at == when  # type: ignore[union-attr]


def test_check_when_is_exported_with_its_bounds() -> None:
    from django_jobs.validation import MAX_WHEN, MIN_WHEN, check_when

    assert (
        datetime(1900, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 30, tzinfo=UTC),
    ) == (MIN_WHEN, MAX_WHEN)
    assert check_when(MIN_WHEN) == MIN_WHEN
    plus_twenty = timezone(timedelta(hours=20))
    assert check_when(datetime(2030, 1, 1, 20, tzinfo=plus_twenty)) == datetime(
        2030, 1, 1, tzinfo=UTC
    )
    assert check_when(datetime(2030, 1, 1, 20, tzinfo=plus_twenty)).tzinfo is UTC
    for instant in (BAD_WHENS[0], BAD_WHENS[3], MAX_WHEN + timedelta(microseconds=1)):
        with pytest.raises(InvalidSchedule, match=re.escape(instant.isoformat())):
            check_when(instant)
    with pytest.raises(InvalidSchedule, match="no timezone"):
        check_when(datetime(2030, 1, 1))


# Data: JSON, finite, 64-bit integers, no NUL or lone surrogate, at most 20 levels, 1 MiB

BAD_DATA: list[tuple[Any, str]] = [
    ({"x": "a\x00b"}, r"data\['x'\]"),
    ({"a\x00": 1}, r"data has the key 'a\\x00'"),
    ({"x": "\ud800"}, r"data\['x'\]"),
    ({"\udfff": 1}, r"data has the key '\\udfff'"),
    ({"x": [1, 2**63]}, r"data\['x'\]\[1\]"),
    ({"x": -(2**63) - 1}, r"data\['x'\]"),
    ({"x": 10**5000}, r"data\['x'\] is an integer of about 5001 digits"),
    ({"x": math.nan}, r"data\['x'\] is nan"),
    ({"deep": nested(20)}, r"nested more than 20 levels deep"),
    (nested(DEEP), r"nested more than 20 levels deep"),
    ({"big": "x" * 2**20}, r"at most 1048576 bytes"),
]


@pytest.mark.parametrize(("data", "where"), BAD_DATA)
def test_bad_data_is_refused_by_schedule(data: Any, where: str) -> None:
    with nothing_written(), pytest.raises(InvalidJobData, match=where) as info:
        schedule("now", "record", data)
    assert str(info.value).endswith(".")
    with nothing_written(), pytest.raises(InvalidJobData, match=where):
        now("record", data)
    with nothing_written(), pytest.raises(InvalidJobData, match=where):
        schedule_many([("now", "record", {}), ("now", "record", data)])


def test_data_at_its_bounds_is_stored() -> None:
    from django_jobs.validation import MAX_DATA_BYTES, MAX_JSON_DEPTH

    assert (MAX_JSON_DEPTH, MAX_DATA_BYTES) == (20, 2**20)
    data = {
        "deep": nested(MAX_JSON_DEPTH - 1),  # the dict is the 20th level
        "ints": [2**63 - 1, -(2**63)],
        "text": "é\u2028\U0001f600",
        "big": "x" * (MAX_DATA_BYTES - 200),
    }
    created = schedule("now", "record", data)
    assert Job.objects.get(pk=created.pk).data == data


def test_the_return_value_check_is_the_same_function() -> None:
    from django_jobs.validation import check_json
    from django_jobs.worker import executor

    assert executor.check_json is check_json
    with pytest.raises(InvalidJobData, match=r"the return value(\[0\])+ is nested more than 20"):
        check_json(nested(DEEP), "the return value")


# queue, unique_key, names

BAD_QUEUES: list[Any] = ["", "q" * 101, "a\x00b", "a\nb", "\ud800", 5]


@pytest.mark.parametrize("queue", BAD_QUEUES)
def test_bad_queue_is_refused_by_schedule(queue: Any) -> None:
    refused(lambda: schedule("now", "record", queue=queue), queue)


@pytest.mark.parametrize("queue", BAD_QUEUES)
def test_bad_queue_is_refused_by_job(queue: Any) -> None:
    refused(lambda: job("val-queue", queue=queue)(lambda j: None), queue, InvalidJobDefinition)
    assert "val-queue" not in registry


@pytest.mark.parametrize("key", ["k" * 256, "a\x00b", "\ud800", "", 5, "django_jobs:recurring:x"])
def test_bad_unique_key_is_refused(key: Any) -> None:
    refused(lambda: schedule("now", "record", unique_key=key), key)


def test_a_key_of_255_characters_is_stored() -> None:
    created = schedule("now", "record", unique_key="k" * 255)
    assert Job.objects.get(pk=created.pk).unique_key == "k" * 255


@pytest.mark.parametrize("name", [["record"], {"a": 1}, "a\x00b", "n" * 300])
def test_an_unusable_name_is_a_jobs_error(name: Any) -> None:
    with nothing_written(), pytest.raises(JobsError):
        schedule("now", name)


@pytest.mark.parametrize("name", ["a\x00b", "\ud800", "a\nb", "n" * 201])
def test_bad_job_name_is_refused_by_job(name: str) -> None:
    refused(lambda: job(name)(lambda j: None), name, InvalidJobDefinition)


# Numbers of the API and @job

TOO_MANY_ATTEMPTS = [1001, 10**10, 2**63]


@pytest.mark.parametrize("value", TOO_MANY_ATTEMPTS)
def test_max_attempts_past_the_bound_is_refused(value: int) -> None:
    message = refused(lambda: schedule("now", "record", max_attempts=value), value)
    assert "from 1 to 1000" in message
    refused(lambda: job("val-attempts", max_attempts=value), value, InvalidJobDefinition)


@pytest.mark.parametrize("value", [10_001, 10**10, 0, math.inf])
def test_job_concurrency_past_the_bound_is_refused(value: Any) -> None:
    message = refused(lambda: job("val-concurrency", concurrency=value), value)
    assert "from 1 to 10000" in message


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("backoff", math.nan),
        ("backoff", math.inf),
        ("backoff", 30 * 86400 + 1),
        ("backoff_max", math.inf),
        ("backoff_max", math.nan),
        ("backoff_max", 1e12),
        ("backoff_jitter", math.nan),
        ("backoff_jitter", math.inf),
        ("backoff_jitter", -0.1),
        ("lock_lifetime", 1e12),
        ("lock_lifetime", math.inf),
        ("lock_lifetime", math.nan),
        ("lock_lifetime", 0.5),
        ("lock_lifetime", 86400.5),
        ("lock_lifetime", timedelta(days=2)),
        ("lock_lifetime", timedelta(milliseconds=500)),
    ],
)
def test_non_finite_or_out_of_range_job_options_are_refused(option: str, value: Any) -> None:
    message = refused(lambda: job("val-option", **{option: value}), value, InvalidJobDefinition)
    assert f"Invalid {option}=" in message
    assert "val-option" not in registry


def test_lock_lifetime_bounds_are_exported() -> None:
    from django_jobs.validation import MAX_LOCK_LIFETIME, MIN_LOCK_LIFETIME

    assert (MIN_LOCK_LIFETIME, MAX_LOCK_LIFETIME) == (1.0, 86400.0)
    job("val-short-lock", lock_lifetime=MIN_LOCK_LIFETIME)(lambda j: None)
    job("val-long-lock", lock_lifetime=timedelta(seconds=MAX_LOCK_LIFETIME))(lambda j: None)
    assert registry["val-short-lock"].lock_lifetime == timedelta(seconds=1)
    assert registry["val-long-lock"].lock_lifetime == timedelta(days=1)


@pytest.mark.parametrize(
    "expression", ["every 99999999 days", "every 600000 weeks", ",".join(["0"] * 120) + " * * * *"]
)
def test_schedules_a_job_row_cannot_hold_are_refused(expression: str) -> None:
    refused(lambda: job("val-schedule", schedule=expression), expression, InvalidSchedule)


# cancel()


def test_cancel_refuses_ids_that_are_not_whole_numbers() -> None:
    jobs = [schedule("in 1 hour", "record") for _ in range(2)]
    for value in (jobs[0].pk + 0.5, float(jobs[0].pk), str(jobs[1].pk).encode(), "abc", True):
        with pytest.raises(JobsError) as info:
            cancel(value)
        assert repr(value) in str(info.value)
    assert Job.objects.count() == 2


@pytest.mark.parametrize("value", [-1, 0, 2**63, 10**30])
def test_cancel_refuses_ids_out_of_range(value: int) -> None:
    schedule("in 1 hour", "record")
    refused(lambda: cancel(value), value)


def test_cancel_of_a_missing_id_names_it() -> None:
    from django_jobs.exceptions import JobNotFound

    kept = schedule("in 1 hour", "record")
    missing = kept.pk + 1000
    with nothing_written(), pytest.raises(JobNotFound) as info:
        cancel(missing)
    assert isinstance(info.value, LookupError) and isinstance(info.value, JobsError)
    assert str(missing) in str(info.value)


@pytest.mark.parametrize(
    "options", [{"unique_key": "a\x00"}, {"name": "a\x00"}, {"unique_key": 5}, {"name": ["x"]}]
)
def test_cancel_checks_its_filters(options: dict[str, Any]) -> None:
    schedule("in 1 hour", "record", unique_key="kept")
    (value,) = options.values()
    refused(lambda: cancel(**options), value)


# The admin's create form: every bound is a form error, never a 500


def post_create(client: Client, **fields: str) -> Any:
    data = {"name": "record", "data": "{}", "when": "now", "priority": "", "queue": ""}
    data.update(fields)
    return client.post(add_url(), data)


def form_errors(response: Any) -> str:
    assert response.status_code == 200, response.status_code
    form = response.context["form"]
    return " ".join(str(e) for errors in form.errors.values() for e in errors)


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        (
            {"when": "0001-01-01T00:00:00+01:00"},
            '"0001-01-01T00:00:00+01:00"',
        ),  # the form quotes what was typed
        (
            {"when": "9999-12-31T23:59:59-12:00"},
            '"9999-12-31T23:59:59-12:00"',
        ),  # the form quotes what was typed
        ({"when": "0001-01-01 00:00"}, "0001-01-01"),  # naive: in the current timezone
        (
            {"when": "in 99999999999 days"},
            '"in 99999999999 days"',
        ),  # the form quotes what was typed
        ({"data": nested_text(DEEP)}, "nested"),
        ({"data": nested_text(25)}, "nested more than 20 levels deep"),
        ({"data": '{"x": "a\\u0000b"}'}, "data['x']"),
        ({"data": '{"x": "\\ud800"}'}, "data['x']"),
        ({"data": '{"a\\u0000": 1}'}, "data has the key 'a\\x00'"),
        ({"data": '{"x": ' + "9" * 5000 + "}"}, "data"),
        ({"data": '{"x": 9223372036854775808}'}, "9223372036854775808"),
        ({"data": '{"x": 1e400}'}, "data['x'] is inf"),
        ({"data": '{"x": "' + "y" * 2**20 + '"}'}, "1048576 bytes"),
        ({"queue": "a\nb"}, "'a\\nb'"),
        ({"queue": "a\x00b"}, "Null characters are not allowed."),
    ],
)
def test_create_form_refuses_out_of_bound_values(
    admin_client: Client, fields: dict[str, str], error: str
) -> None:
    with nothing_written():
        response = post_create(admin_client, **fields)
        assert error in form_errors(response)


# The admin's reschedule forms (one job, bulk, and a recurring job's new schedule)


@pytest.mark.parametrize(
    "when",
    [
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-12:00",
        "0001-01-01 00:00",
        "9999-12-31 23:59",
        "in 99999999999 days",
    ],
)
def test_reschedule_form_refuses_out_of_range_times(admin_client: Client, when: str) -> None:
    target = make_job(next_run_at=future(days=5))
    before = Job.objects.filter(pk=target.pk).values_list().get()
    typed = f'"{when}"'  # the form quotes what was typed, as typed
    assert typed in form_errors(admin_client.post(reschedule_url(target), {"when": when}))
    data = bulk("reschedule", target, apply="1", when=when)
    del data["index"]
    assert typed in form_errors(admin_client.post(changelist_url(), data))
    assert Job.objects.filter(pk=target.pk).values_list().get() == before
    assert admin_client.get(job_url(target)).status_code == 200


@pytest.mark.parametrize("expression", ["every 99999999 days", "every 600000 weeks"])
def test_reschedule_form_refuses_intervals_past_the_bound(
    admin_client: Client, expression: str
) -> None:
    sync_recurring()
    target = Job.objects.get(unique_key=recurring_key("monthly"))
    before = Job.objects.filter(pk=target.pk).values_list().get()
    response = admin_client.post(
        reschedule_url(target), {"schedule": expression, "timezone": "UTC"}
    )
    assert repr(expression) in form_errors(response)
    assert Job.objects.filter(pk=target.pk).values_list().get() == before


# The tasks backend


@pytest.mark.parametrize(
    ("args", "kwargs", "where"),
    [
        (["a\x00b"], {}, r"args\[0\]"),
        ([], {"x": "\ud800"}, r"kwargs\['x'\]"),
        ([2**63], {}, r"args\[0\]"),
        ([10**5000], {}, r"args\[0\] is an integer of about 5001 digits"),
        ([nested(DEEP)], {}, r"args\[0\].*nested more than 20 levels deep"),
        ([], {"x": nested(DEEP)}, r"kwargs\['x'\].*nested more than 20 levels deep"),
        (["x" * 2**20], {}, r"1048576 bytes"),
        ([b"a\x00"], {}, r"args\[0\]"),
    ],
)
def test_task_arguments_go_through_the_data_checks(
    args: list[Any], kwargs: dict[str, Any], where: str
) -> None:
    with nothing_written(), pytest.raises(InvalidJobData, match=where) as info:
        tasks.echo.enqueue(*args, **kwargs)
    assert isinstance(info.value, TypeError)  # as Django's tasks raise for bad arguments


@pytest.mark.parametrize("run_after", [BAD_WHENS[0], BAD_WHENS[3]])
def test_task_run_after_goes_through_check_when(run_after: datetime) -> None:
    with nothing_written(), pytest.raises(InvalidSchedule) as info:
        tasks.add.using(run_after=run_after).enqueue(1, 2)
    assert run_after.isoformat() in str(info.value)


@pytest.mark.parametrize("queue", ["a\x00b", "a\nb", "\ud800"])
def test_task_queue_names_go_through_the_queue_check(queue: str) -> None:
    open_backend = {"BACKEND": "django_jobs.backend.JobsBackend", "QUEUES": []}
    with (
        override_settings(TASKS={**settings.TASKS, "open": open_backend}),
        nothing_written(),
        pytest.raises(JobsError, match=re.escape(repr(queue))),
    ):
        tasks.add.using(backend="open", queue_name=queue).enqueue(1, 2)


@pytest.mark.parametrize(
    ("options", "value"),
    [
        ({"MAX_ATTEMPTS": 10**10}, 10**10),
        ({"MAX_ATTEMPTS": 1001}, 1001),
        ({"BACKOFF": math.nan}, math.nan),
        ({"BACKOFF": math.inf}, math.inf),
        ({"BACKOFF": 1e12}, 1e12),
    ],
)
def test_backend_options_are_bounded(options: dict[str, Any], value: Any) -> None:
    from django_jobs.tasks_compat import InvalidTaskBackend

    with pytest.raises(InvalidTaskBackend) as info:
        JobsBackend("bounded", {"BACKEND": "django_jobs.backend.JobsBackend", "OPTIONS": options})
    assert repr(value) in str(info.value)


# runjobs: bounded options, refused before a worker starts


@pytest.fixture
def no_worker_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """A value the command wrongly accepts fails the test instead of starting workers."""
    from django_jobs import cluster
    from django_jobs.management.commands import runjobs

    def started(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"runjobs accepted {args} {kwargs} and started a worker")

    monkeypatch.setattr(runjobs, "Worker", started)
    monkeypatch.setattr(cluster, "Supervisor", started)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lock-lifetime", "1e12"], "from 1 to 86400"),
        (["--lock-lifetime", "inf"], "not 'inf'"),
        (["--lock-lifetime", "nan"], "not 'nan'"),
        (["--lock-lifetime", "0.5"], "not '0.5'"),
        (["--poll-interval", "3601"], "above 0 and at most 3600"),
        (["--poll-interval", "inf"], "not 'inf'"),
        (["--grace-period", "86401"], "from 0 to 86400"),
        (["--grace-period", "nan"], "not 'nan'"),
        (["--concurrency", "1001"], "from 1 to 1000"),
        (["--concurrency", "10000000000"], "not '10000000000'"),
        (["--max-jobs", "1000000001"], "from 1 to 1000000000"),
        (["--processes", "257"], "(at most 256)"),
        (["--processes", "0"], "not '0'"),
        (["--worker-id", "w" * 201], "at most 200 characters"),
        (["--worker-id", "a\x00b"], "'a\\x00b'"),
        (["--queue", "a\x00b"], "'a\\x00b'"),
    ],
)
@pytest.mark.usefixtures("no_worker_starts")
def test_runjobs_options_are_bounded(args: list[str], message: str) -> None:
    with nothing_written(), pytest.raises(CommandError) as info:
        call_command("runjobs", *args)
    assert message in str(info.value)
    assert not Worker.objects.exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"lock_lifetime": 1e12}, "not '1000000000000.0'"),
        ({"lock_lifetime": math.inf}, "not 'inf'"),
        ({"poll_interval": math.nan}, "not 'nan'"),
        ({"grace_period": math.inf}, "not 'inf'"),
        ({"concurrency": 10**10}, "not '10000000000'"),
        ({"processes": 1000}, "not '1000'"),
    ],
)
@pytest.mark.usefixtures("no_worker_starts")
def test_runjobs_keyword_options_are_bounded(options: dict[str, Any], message: str) -> None:
    with nothing_written(), pytest.raises(CommandError) as info:
        call_command("runjobs", **options)
    assert message in str(info.value)
    assert not Worker.objects.exists()


# Settings


@pytest.mark.parametrize(
    ("key", "value", "bound"),
    [
        ("LOCK_LIFETIME", 1e12, "from 1 to 86400"),
        ("LOCK_LIFETIME", math.inf, "from 1 to 86400"),
        ("LOCK_LIFETIME", 0.5, "from 1 to 86400"),
        ("POLL_INTERVAL", math.inf, "at most 3600"),
        ("POLL_INTERVAL", 3601, "at most 3600"),
        ("GRACE_PERIOD", math.inf, "from 0 to 86400"),
        ("BACKOFF_BASE", math.inf, "at most 2592000"),
        ("BACKOFF_MAX", 1e12, "at most 2592000"),
        ("BACKOFF_JITTER", math.nan, "from 0 to 1"),
        ("DEFAULT_MAX_ATTEMPTS", 10**10, "from 1 to 1000"),
        ("HEARTBEAT_INTERVAL", math.inf, "at most 86400"),
        ("STALE_WORKER_AFTER", math.inf, "at most 259200"),
        ("DEFAULT_QUEUE", "", "non-empty"),
        ("DEFAULT_QUEUE", "a\x00b", "control characters"),
    ],
)
def test_settings_are_bounded(key: str, value: Any, bound: str) -> None:
    with override_settings(DJANGO_JOBS={key: value}):
        (error,) = check_settings()
    assert error.id == "django_jobs.E003"
    assert repr(value) in error.msg
    assert bound in error.msg + " " + error.hint


# One module for the bounds


def test_the_entry_points_share_one_validation_module() -> None:
    from django_jobs import api, backend, checks, forms, registry, validation
    from django_jobs.management import options
    from django_jobs.management.commands import runjobs

    # The checks that were copied into each entry point are gone from them.
    assert not hasattr(registry, "_positive")
    assert not hasattr(backend, "_is_number")
    assert not hasattr(checks, "POSITIVE_NUMBERS")
    for module in (api, backend, forms, registry, runjobs):
        for name in ("check_json", "check_queue", "check_priority"):
            assert getattr(module, name, validation.check_json) in (
                validation.check_json,
                validation.check_queue,
                validation.check_priority,
            )
    assert options.bounded("--x", validation.LOCK_LIFETIME)("30") == 30.0
