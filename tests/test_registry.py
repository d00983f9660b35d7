"""@job options and their validation, the registry, and the retry backoff."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.test import override_settings

from django_jobs import job
from django_jobs.exceptions import InvalidJobDefinition, InvalidSchedule, UnknownJob
from django_jobs.registry import (
    PRIORITIES,
    JobDefinition,
    Registry,
    parse_priority,
    registry,
)
from django_jobs.schedules import CronSchedule, IntervalSchedule


@pytest.fixture(autouse=True)
def forget_new_definitions() -> Iterator[None]:
    """Unregister whatever a test registers, so other tests see the usual registry."""
    before = set(registry.names())
    yield
    for name in set(registry.names()) - before:
        registry.unregister(name)


def noop(j):
    return None


def other(j):
    return None


def test_job_registers_a_definition_with_its_options():
    @job(
        "reg-full",
        priority="high",
        queue="emails",
        concurrency=2,
        lock_lifetime=90,
        max_attempts=7,
        backoff=2,
        backoff_max=60,
        backoff_jitter=0.5,
        schedule="*/15 * * * *",
        timezone="Europe/Paris",
    )
    def full(j):
        return "done"

    definition = registry["reg-full"]
    assert full.job_definition is definition
    assert full(None) == "done"  # the decorator returns the function itself
    assert definition.func is full
    assert (definition.priority, definition.queue, definition.concurrency) == (10, "emails", 2)
    assert definition.lock_lifetime == timedelta(seconds=90)
    assert definition.max_attempts == 7
    assert (definition.backoff_base, definition.backoff_max, definition.backoff_jitter) == (
        2.0,
        60.0,
        0.5,
    )
    assert definition.schedule == CronSchedule("*/15 * * * *")
    assert definition.recurring and definition.timezone == "Europe/Paris"
    assert not definition.is_async
    assert "reg-full" in registry
    assert definition in list(registry)
    assert definition in registry.recurring()


def test_defaults():
    job("reg-plain")(noop)
    definition = registry["reg-plain"]
    assert (definition.priority, definition.queue, definition.concurrency) == (0, "default", None)
    assert definition.lock_lifetime is None
    assert definition.max_attempts == 3
    assert (definition.backoff_base, definition.backoff_max, definition.backoff_jitter) == (
        10.0,
        3600.0,
        0.1,
    )
    assert definition.schedule is None and not definition.recurring
    assert definition not in registry.recurring()


@override_settings(
    DJANGO_JOBS={
        "DEFAULT_QUEUE": "background",
        "DEFAULT_MAX_ATTEMPTS": 5,
        "BACKOFF_BASE": 2.0,
        "BACKOFF_MAX": 30.0,
        "BACKOFF_JITTER": 0.0,
    }
)
def test_defaults_come_from_the_settings():
    job("reg-from-settings")(noop)
    definition = registry["reg-from-settings"]
    assert definition.queue == "background"
    assert definition.max_attempts == 5
    assert (definition.backoff_base, definition.backoff_max, definition.backoff_jitter) == (
        2.0,
        30.0,
        0.0,
    )


def test_async_functions_are_recognised():
    @job("reg-async")
    async def coroutine(j):
        return None

    assert registry["reg-async"].is_async


def test_interval_schedule_and_lock_lifetime_as_timedelta():
    job("reg-interval", schedule="every 5 minutes", lock_lifetime=timedelta(minutes=2))(noop)
    definition = registry["reg-interval"]
    assert isinstance(definition.schedule, IntervalSchedule)
    assert definition.schedule.interval == timedelta(minutes=5)
    assert definition.lock_lifetime == timedelta(minutes=2)


@pytest.mark.parametrize(
    ("name", "value"), [*PRIORITIES.items(), (-100, -100), (100, 100), (0, 0), (7, 7)]
)
def test_priority_names_and_numbers(name, value):
    assert parse_priority(name) == value
    job(f"reg-priority-{name}", priority=name)(noop)
    assert registry[f"reg-priority-{name}"].priority == value


def test_priority_names_are_ordered():
    assert (
        PRIORITIES["lowest"]
        < PRIORITIES["low"]
        < PRIORITIES["normal"]
        < PRIORITIES["high"]
        < PRIORITIES["highest"]
    )


@pytest.mark.parametrize("priority", ["urgent", "HIGH", 101, -101, True, None, 2.5])
def test_bad_priority(priority):
    with pytest.raises(
        InvalidJobDefinition, match=re.escape(f"Invalid priority {priority!r}")
    ) as info:
        job("reg-bad-priority", priority=priority)(noop)
    assert "lowest, low, normal, high, highest" in str(info.value)
    assert "reg-bad-priority" not in registry


# Invalid options are refused when the job is defined, naming the value.


@pytest.mark.parametrize(
    "expression", ["61 * * * *", "* * *", "0 0 30 2 *", "0 0 * * * *", "not a cron", "every 0 days"]
)
def test_invalid_schedule_at_definition_time(expression):
    with pytest.raises(InvalidSchedule, match=re.escape(f"Invalid schedule {expression!r}")):
        job("reg-bad-cron", schedule=expression)
    assert "reg-bad-cron" not in registry


@pytest.mark.parametrize("tz", ["Mars/Olympus", "Europe", "", "utc+1", "../etc/passwd"])
def test_unknown_timezone(tz):
    with pytest.raises(InvalidSchedule, match=re.escape(f"Unknown timezone {tz!r}")):
        job("reg-bad-tz", schedule="@daily", timezone=tz)


@pytest.mark.parametrize("concurrency", [0, -1, 1.5, "2", True])
def test_bad_concurrency(concurrency):
    with pytest.raises(
        InvalidJobDefinition, match=re.escape(f"Invalid concurrency={concurrency!r}")
    ):
        job("reg-bad-concurrency", concurrency=concurrency)


@pytest.mark.parametrize("max_attempts", [0, -2, 1.5, "3", False])
def test_bad_max_attempts(max_attempts):
    with pytest.raises(
        InvalidJobDefinition, match=re.escape(f"Invalid max_attempts={max_attempts!r}")
    ):
        job("reg-bad-attempts", max_attempts=max_attempts)


@pytest.mark.parametrize("lock_lifetime", [0, -5, 0.0, timedelta(0), timedelta(seconds=-1), "30"])
def test_bad_lock_lifetime(lock_lifetime):
    with pytest.raises(
        InvalidJobDefinition, match=re.escape(f"Invalid lock_lifetime={lock_lifetime!r}")
    ):
        job("reg-bad-lock", lock_lifetime=lock_lifetime)


@pytest.mark.parametrize(
    ("option", "value"),
    [("backoff", 0), ("backoff", -1), ("backoff_max", 0), ("backoff_jitter", 1.5)],
)
def test_bad_backoff(option, value):
    with pytest.raises(InvalidJobDefinition, match=re.escape(f"Invalid {option}={value!r}")):
        job("reg-bad-backoff", **{option: value})


@pytest.mark.parametrize("name", ["", "   ", None, 42, "n" * 201])
def test_bad_name(name):
    with pytest.raises(InvalidJobDefinition, match=re.escape(f"Invalid job name {name!r}")):
        job(name)


def test_bad_queue():
    with pytest.raises(InvalidJobDefinition, match="Invalid queue ''"):
        job("reg-bad-queue", queue="")(noop)


def test_decorating_something_not_callable():
    with pytest.raises(InvalidJobDefinition, match="not callable"):
        job("reg-not-callable")(42)


def test_duplicate_name_for_another_function_is_refused():
    job("reg-dup")(noop)
    with pytest.raises(InvalidJobDefinition) as info:
        job("reg-dup")(other)
    message = str(info.value)
    assert "'reg-dup'" in message
    assert "tests.test_registry.noop" in message and "tests.test_registry.other" in message
    assert registry["reg-dup"].func is noop


def test_the_same_function_may_register_again():
    # A module imported twice (autoreload, a second import path) declares the same job again.
    job("reg-again", max_attempts=1)(noop)
    job("reg-again", max_attempts=2)(noop)
    assert registry["reg-again"].max_attempts == 2


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(UnknownJob) as info:
        registry["no-such-job"]
    assert "'no-such-job'" in str(info.value)
    assert "record, " in str(info.value)
    assert registry.get("no-such-job") is None
    assert "no-such-job" not in registry


def test_a_fresh_registry_is_independent():
    fresh = Registry()
    assert fresh.names() == []
    assert "none; declare jobs with @job" in fresh.names_text()
    definition = JobDefinition(name="only-here", func=noop)
    fresh.register(definition)
    assert fresh.names() == ["only-here"]
    assert "only-here" not in registry
    fresh.unregister("only-here")
    fresh.unregister("only-here")  # unregistering twice is harmless
    assert fresh.names() == []


# Retry backoff


def test_retry_delay_without_jitter_doubles_up_to_the_cap():
    definition = JobDefinition(
        name="d", func=noop, backoff_base=10, backoff_max=100, backoff_jitter=0
    )
    assert [definition.retry_delay(n).total_seconds() for n in range(1, 7)] == [
        10,
        20,
        40,
        80,
        100,
        100,
    ]
    # Attempt 0 (nothing has run) waits the base delay, never less.
    assert definition.retry_delay(0) == timedelta(seconds=10)


def test_retry_delay_jitter_stays_within_its_bounds():
    definition = JobDefinition(
        name="d", func=noop, backoff_base=4, backoff_max=1000, backoff_jitter=0.25
    )
    for attempt, base in [(1, 4), (2, 8), (3, 16), (8, 512)]:
        delays = {definition.retry_delay(attempt).total_seconds() for _ in range(300)}
        assert min(delays) >= base
        assert max(delays) < base * 1.25
        # It is random: 300 draws are not all the same.
        assert len(delays) > 1
    # The cap holds with the jitter added: backoff_max is the longest wait there is.
    assert {definition.retry_delay(9).total_seconds() for _ in range(50)} == {1000}
