"""Property-based tests: whatever a user passes, django_jobs refuses it or stores a usable row.

For any input (any text, datetimes from year 1 to 9999 in any offset, floats with NaN and
infinity, huge integers, NUL and lone surrogates, deeply nested JSON) each entry point either
raises a django_jobs error and writes nothing, or stores a row that reads back and that the
admin's job page and job list render. A driver error, or a Python internals error such as
OverflowError, RecursionError or UnicodeEncodeError, fails the test.

Set HYPOTHESIS_EXAMPLES to run more examples than the default (e.g. 1000 before a release).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from django.db import transaction
from django.test import Client
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from django_jobs import cancel, job, now, schedule, schedule_many
from django_jobs.exceptions import JobsError
from django_jobs.models import Job
from django_jobs.registry import registry
from django_jobs.schedules import UNITS
from django_jobs.sync import recurring_key, sync_recurring
from django_jobs.validation import (
    MAX_ATTEMPTS,
    MAX_BACKOFF,
    MAX_CONCURRENCY,
    MAX_LOCK_LIFETIME,
    MAX_WHEN,
    MIN_LOCK_LIFETIME,
    MIN_WHEN,
    PRIORITIES,
)

from .admin_support import add_url, changelist_url, future, job_url, make_job, reschedule_url

pytestmark = pytest.mark.django_db

EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "60"))
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # no example database in the working tree
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # the test database and admin client are shared
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)

# Strategies: each value is valid most of the time, so that whole calls get stored, and
# anything at all the rest of the time.


def mostly(valid: st.SearchStrategy[Any], anything: st.SearchStrategy[Any]) -> Any:
    """`valid` about four times in five, else `anything`."""
    # Hypothesis draws 0 (the simplest choice) most often, so 0 picks the valid strategy.
    return st.integers(0, 4).flatmap(lambda i: anything if i == 4 else valid)


# Any character, with NUL, control characters and lone surrogates drawn often.
CHARACTERS = st.one_of(
    st.characters(),
    st.characters(categories=["Cs"]),
    st.sampled_from(["\x00", "\n", "\x7f", "\u2028"]),
)
ANY_TEXT = st.text(CHARACTERS, max_size=40) | st.text(CHARACTERS, min_size=200, max_size=300)
NAME_TEXT = st.text(st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=100)
# What a browser can send: no lone surrogates (they have no UTF-8 encoding).
FORM_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=60)

OFFSETS = st.integers(-1439, 1439).map(lambda minutes: timezone(timedelta(minutes=minutes)))
AWARE = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59), timezones=OFFSETS
)
NAIVE = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59))
HUGE_INTS = st.one_of(
    st.integers(),
    st.integers(min_value=2**62, max_value=2**65),
    st.integers(min_value=-(2**65), max_value=-(2**62)),
    # Past any database's integers (test_validation.py covers ints too long for repr()).
    st.just(10**4000),
)
IN_TEXT = st.builds(
    lambda n, unit: f"in {n} {unit}",
    st.integers(0, 10**20) | st.integers(0, 10**6),
    st.sampled_from(sorted(UNITS)),
)
WHEN_TEXT = st.one_of(
    ANY_TEXT,
    AWARE.map(datetime.isoformat),
    NAIVE.map(datetime.isoformat),
    NAIVE.map(lambda d: d.strftime("%Y-%m-%d %H:%M")),
    IN_TEXT,
    st.just("now"),
)
WHENS = mostly(
    st.one_of(AWARE, st.timedeltas(timedelta(days=-3650), timedelta(days=3650)), IN_TEXT),
    st.one_of(AWARE, NAIVE, st.timedeltas(), WHEN_TEXT, st.floats(), HUGE_INTS, st.none()),
)


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value] if depth % 2 else {"k": value}
    return value


def json_values(leaves: st.SearchStrategy[Any], keys: st.SearchStrategy[Any]) -> Any:
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.lists(children, max_size=4).map(tuple),
            st.dictionaries(keys, children, max_size=4),
        ),
        max_leaves=20,
    )


VALID_JSON = json_values(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        NAME_TEXT,
    ),
    NAME_TEXT,
)
JSON = json_values(
    st.one_of(
        st.none(),
        st.booleans(),
        HUGE_INTS,
        st.floats(allow_nan=True, allow_infinity=True),
        ANY_TEXT,
    ),
    ANY_TEXT | st.integers(0, 3),
)
DATA = mostly(
    VALID_JSON | st.integers(1, 20).map(nested),
    st.one_of(
        JSON,
        st.integers(1, 40).map(nested),
        st.just(nested(100_000)),
        st.just({"big": "x" * (2**20)}),
        st.sets(st.integers(), max_size=2),
        st.binary(max_size=4),
        st.builds(object),
    ),
)
NAMES = mostly(
    st.sampled_from(["record", "sleep", "monthly"]),
    st.one_of(ANY_TEXT, HUGE_INTS, st.lists(st.text(max_size=3), max_size=2)),
)
NUMBERS = st.one_of(
    st.integers(-5, 2 * MAX_ATTEMPTS),
    HUGE_INTS,
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    ANY_TEXT,
)
PRIORITY = mostly(
    st.none() | st.sampled_from(sorted(PRIORITIES)) | st.integers(-100, 100),
    st.integers(-200, 200) | NUMBERS,
)
QUEUES = mostly(st.none() | st.just("default") | NAME_TEXT, ANY_TEXT | HUGE_INTS)
KEYS = mostly(
    st.none() | NAME_TEXT | st.just("k" * 255),
    ANY_TEXT | st.just("k" * 256) | HUGE_INTS,
)
ATTEMPTS = mostly(st.none() | st.integers(1, MAX_ATTEMPTS), NUMBERS)


# Outcomes


def attempt(call: Callable[[], Any]) -> Any:
    """call(), or None if it raised a django_jobs error, in which case nothing was written."""
    before = Job.objects.count()
    try:
        with transaction.atomic():
            result = call()
    except JobsError as exc:
        event(f"refused: {type(exc).__name__}")
        assert Job.objects.count() == before
        return None
    event("stored")
    return result


def assert_usable(client: Client, pk: int) -> Job:
    """The row reads back, and the admin's job page and job list render it."""
    stored = Job.objects.get(pk=pk)
    assert stored.next_run_at is None or MIN_WHEN <= stored.next_run_at <= MAX_WHEN
    assert client.get(job_url(stored)).status_code == 200
    assert client.get(changelist_url()).status_code == 200
    return stored


# The API


def fresh_key() -> str:
    """A key of its own for each example (the rows of earlier examples stay until the end)."""
    return str(Job.objects.count()) + "-" + str(datetime.now().timestamp())


@PROPERTY
@given(
    when=WHENS,
    name=NAMES,
    data=DATA,
    priority=PRIORITY,
    queue=QUEUES,
    unique_key=KEYS,
    max_attempts=ATTEMPTS,
)
def test_schedule(
    admin_client: Client,
    when: Any,
    name: Any,
    data: Any,
    priority: Any,
    queue: Any,
    unique_key: Any,
    max_attempts: Any,
) -> None:
    created = attempt(
        lambda: schedule(
            when,
            name,
            data,
            priority=priority,
            queue=queue,
            unique_key=unique_key,
            max_attempts=max_attempts,
        )
    )
    if created is not None:
        stored = assert_usable(admin_client, created.pk)
        assert 1 <= stored.max_attempts <= MAX_ATTEMPTS


@PROPERTY
@given(name=NAMES, data=DATA, priority=PRIORITY, queue=QUEUES)
def test_now(admin_client: Client, name: Any, data: Any, priority: Any, queue: Any) -> None:
    created = attempt(lambda: now(name, data, priority=priority, queue=queue))
    if created is not None:
        assert_usable(admin_client, created.pk)


@PROPERTY
@given(
    items=st.lists(
        mostly(
            st.tuples(WHENS, NAMES, DATA),
            st.one_of(
                st.tuples(st.just("now"), st.just("record"), JSON), st.tuples(WHENS), HUGE_INTS
            ),
        ),
        max_size=4,
    )
)
def test_schedule_many(admin_client: Client, items: list[Any]) -> None:
    created = attempt(lambda: schedule_many(items))
    for row in created or []:
        assert_usable(admin_client, row.pk)


@PROPERTY
@given(data=st.data())
def test_cancel(data: st.DataObject) -> None:
    target = schedule("in 1 hour", "record", unique_key=f"cancel-{fresh_key()}")
    by = data.draw(st.sampled_from(["job", "unique_key", "name"]), label="by")
    anything = st.one_of(
        st.sampled_from(
            [
                target.pk + 0.5,
                float(target.pk),
                str(target.pk),
                str(target.pk).encode(),
                -target.pk,
                True,
            ]
        ),
        HUGE_INTS,
        st.floats(allow_nan=True, allow_infinity=True),
        ANY_TEXT,
        st.binary(max_size=4),
    )
    valid = {
        "job": st.sampled_from([target.pk, target.pk + 1]),
        "unique_key": st.sampled_from([target.unique_key, "no-such-key"]) | NAME_TEXT,
        "name": st.sampled_from(["record", "sleep"]) | NAME_TEXT,
    }[by]
    value = data.draw(mostly(valid, anything), label=by)
    before = Job.objects.count()
    try:
        with transaction.atomic():
            cancelled = cancel(**{by: value})
    except JobsError as exc:
        event(f"refused: {type(exc).__name__}")
        assert Job.objects.count() == before
        return
    event(f"cancelled {cancelled}")
    # Only an id, as an int, cancels by id (22.5 or b"22" never cancel job 22).
    if by == "job":
        assert type(value) is int and cancelled == 1
        assert not Job.objects.filter(pk=value).exists()
    assert Job.objects.count() == before - cancelled


# @job options


@pytest.fixture
def forget_definitions() -> Iterator[None]:
    before = set(registry.names())
    yield
    for name in set(registry.names()) - before:
        registry.unregister(name)


def finite_within(value: float, low: float, high: float) -> bool:
    return math.isfinite(value) and low <= value <= high


@PROPERTY
@given(
    options=st.fixed_dictionaries(
        {},
        optional={
            "priority": PRIORITY,
            "queue": QUEUES,
            "concurrency": mostly(
                st.none() | st.integers(1, MAX_CONCURRENCY),
                NUMBERS | st.integers(0, 2 * MAX_CONCURRENCY),
            ),
            "lock_lifetime": mostly(
                st.none()
                | st.floats(MIN_LOCK_LIFETIME, MAX_LOCK_LIFETIME)
                | st.timedeltas(timedelta(seconds=1), timedelta(days=1)),
                NUMBERS | st.timedeltas() | st.floats(0, 2 * MAX_LOCK_LIFETIME),
            ),
            "max_attempts": ATTEMPTS,
            "backoff": mostly(st.floats(0.001, MAX_BACKOFF), NUMBERS),
            "backoff_max": mostly(st.floats(0.001, MAX_BACKOFF), NUMBERS),
            "backoff_jitter": mostly(st.floats(0, 1), NUMBERS | st.floats(-1, 2)),
            "schedule": mostly(
                st.none()
                | st.sampled_from(["*/5 * * * *", "@daily", "every 10 minutes"])
                | st.builds(lambda n: f"every {n} days", st.integers(1, 36525)),
                ANY_TEXT | st.builds(lambda n: f"every {n} days", st.integers(0, 10**12)),
            ),
            "timezone": mostly(
                st.sampled_from(["UTC", "Europe/Paris", "Pacific/Kiritimati", "Etc/GMT+12"]),
                ANY_TEXT,
            ),
        },
    ),
    name=mostly(st.just("prop-job") | NAME_TEXT, ANY_TEXT),
)
@pytest.mark.usefixtures("forget_definitions")
def test_job_options(admin_client: Client, name: Any, options: dict[str, Any]) -> None:
    registry.unregister("prop-job")
    try:
        job(name, **options)(lambda j: None)
    except JobsError as exc:
        event(f"refused: {type(exc).__name__}")
        assert not isinstance(name, str) or name not in registry
        return
    definition = registry[name]
    assert finite_within(definition.backoff_base, 0, MAX_BACKOFF)
    assert finite_within(definition.backoff_max, 0, MAX_BACKOFF)
    assert finite_within(definition.backoff_jitter, 0, 1)
    assert 1 <= definition.max_attempts <= MAX_ATTEMPTS
    if definition.lock_lifetime is not None:
        seconds = definition.lock_lifetime.total_seconds()
        assert MIN_LOCK_LIFETIME <= seconds <= MAX_LOCK_LIFETIME
    created = attempt(lambda: schedule("now", name))
    if definition.recurring:
        sync_recurring()  # what a worker does at start: the recurring row must be usable too
        assert_usable(admin_client, Job.objects.get(unique_key=recurring_key(name)).pk)
    assert created is not None
    assert_usable(admin_client, created.pk)
    registry.unregister(name)


# The admin's forms


def json_text(value: Any) -> str:
    """The JSON text a user could type for value (escaping NUL and lone surrogates)."""
    try:
        return json.dumps(value, ensure_ascii=True)
    except ValueError:  # not reached with the strategies here; keep the text well-formed
        return "{}"


DATA_TEXT = st.one_of(
    JSON.map(json_text),
    FORM_TEXT,
    st.integers(1, 40).map(lambda depth: "[" * depth + "1" + "]" * depth),
    st.just("[" * 100_000 + "]" * 100_000),
    st.just('{"n": ' + "9" * 5000 + "}"),
)
FORM_WHEN = st.one_of(
    WHEN_TEXT.filter(lambda text: not any(0xD800 <= ord(c) <= 0xDFFF for c in text)),
    FORM_TEXT,
)


VALID_WHEN_TEXT = st.one_of(
    st.just("now"),
    st.builds(
        lambda n, unit: f"in {n} {unit}", st.integers(0, 1000), st.sampled_from(["minutes", "days"])
    ),
    st.datetimes(
        min_value=datetime(1901, 1, 1), max_value=datetime(9998, 12, 31), timezones=OFFSETS
    ).map(datetime.isoformat),
    st.datetimes(min_value=datetime(1901, 1, 1), max_value=datetime(9998, 12, 31)).map(
        lambda d: d.strftime("%Y-%m-%d %H:%M")
    ),
)


@PROPERTY
@given(
    fields=st.fixed_dictionaries(
        {
            "name": mostly(st.sampled_from(["record", "sleep"]), FORM_TEXT),
            "data": mostly(VALID_JSON.map(json_text), DATA_TEXT),
            "when": mostly(VALID_WHEN_TEXT, FORM_WHEN),
            "priority": mostly(st.just("") | st.integers(-100, 100).map(str), FORM_TEXT),
            "queue": mostly(st.just("") | NAME_TEXT, FORM_TEXT),
        }
    )
)
def test_admin_create_form(admin_client: Client, fields: dict[str, str]) -> None:
    before = set(Job.objects.values_list("pk", flat=True))
    response = admin_client.post(add_url(), fields)
    created = set(Job.objects.values_list("pk", flat=True)) - before
    if response.status_code == 200:  # the form again, with its errors
        event("refused")
        assert not created
        assert response.context["form"].errors
        return
    event("stored")
    assert response.status_code == 302
    (pk,) = created
    assert_usable(admin_client, pk)


@pytest.fixture
def targets() -> dict[str, Job]:
    sync_recurring()
    return {
        "one-off": make_job(next_run_at=future(days=5)),
        "recurring": Job.objects.get(unique_key=recurring_key("monthly")),
    }


@PROPERTY
@given(
    which=st.sampled_from(["one-off", "recurring"]),
    fields=st.fixed_dictionaries(
        {"when": mostly(st.just("") | VALID_WHEN_TEXT, FORM_WHEN)},
        optional={
            "schedule": FORM_TEXT
            | st.builds(lambda n: f"every {n} weeks", st.integers(0, 10**12))
            | st.sampled_from(["@daily", "0 3 * * *", "every 10 minutes"]),
            "timezone": FORM_TEXT | st.sampled_from(["UTC", "Europe/Paris", "Etc/GMT-14"]),
        },
    ),
)
def test_admin_reschedule_form(
    admin_client: Client, targets: dict[str, Job], which: str, fields: dict[str, str]
) -> None:
    target = targets[which]
    before = Job.objects.filter(pk=target.pk).values_list().get()
    response = admin_client.post(reschedule_url(target), fields)
    if response.status_code == 200:  # the form again, with its errors
        event("refused")
        assert response.context["form"].errors
        assert Job.objects.filter(pk=target.pk).values_list().get() == before
    else:
        event("rescheduled")
        assert response.status_code == 302
    assert_usable(admin_client, target.pk)
