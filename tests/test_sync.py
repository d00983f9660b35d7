"""sync_recurring: one row per recurring definition, kept, updated, and the misfire rule."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import connections
from django.utils import timezone

from django_jobs.claiming import Failure
from django_jobs.models import RECURRING_KEY_PREFIX, Job, JobState
from django_jobs.registry import JobDefinition, Registry, registry
from django_jobs.schedules import parse_schedule
from django_jobs.sync import recurring_key, sync_recurring
from tests.claiming_support import claim_jobs, finish
from tests.clock_support import db_time


def noop(j):
    return None


def definitions(*specs: tuple[str, str | None, str], **options) -> Registry:
    """A registry of its own holding (name, schedule, timezone) definitions."""
    fresh = Registry()
    for name, expression, tz in specs:
        schedule = parse_schedule(expression) if expression else None
        fresh.register(
            JobDefinition(name=name, func=noop, schedule=schedule, timezone=tz, **options)
        )
    return fresh


def first_slot(expression: str, tz: str, after: datetime) -> datetime:
    return parse_schedule(expression).next_after(after, ZoneInfo(tz))


def claim_all() -> list[Job]:
    return claim_jobs("w1")


HOURLY = ("hourly", "0 * * * *", "UTC")
NIGHTLY = ("nightly", "30 2 * * *", "Europe/Paris")
ONE_OFF = ("one-off", None, "UTC")


@pytest.mark.django_db
def test_one_row_per_recurring_definition():
    before = timezone.now()
    assert sync_recurring(definitions=definitions(HOURLY, NIGHTLY, ONE_OFF)) == 2
    rows = {row.name: row for row in Job.objects.all()}
    assert set(rows) == {"hourly", "nightly"}
    for name, expression, tz in (HOURLY, NIGHTLY):
        row = rows[name]
        assert (row.schedule, row.timezone) == (expression, tz)
        assert row.unique_key == recurring_key(name) == RECURRING_KEY_PREFIX + name
        assert row.state == JobState.SCHEDULED and row.enabled
        assert row.next_run_at == first_slot(expression, tz, before)
        assert row.next_run_at > before
    # 02:30 in Paris is 00:30 or 01:30 UTC.
    assert rows["nightly"].next_run_at.astimezone(ZoneInfo("Europe/Paris")).hour == 2


@pytest.mark.django_db
def test_the_project_registry_is_synced_by_default():
    assert sync_recurring() == len(registry.recurring())
    row = Job.objects.get(name="monthly")
    assert (row.schedule, row.timezone) == ("0 3 1 * *", "Europe/Paris")
    local = row.next_run_at.astimezone(ZoneInfo("Europe/Paris"))
    assert (local.day, local.hour, local.minute) == (1, 3, 0)


@pytest.mark.django_db
def test_options_come_from_the_definition():
    sync_recurring(definitions=definitions(HOURLY, priority=10, queue="ops", max_attempts=4))
    row = Job.objects.get()
    assert (row.priority, row.queue, row.max_attempts) == (10, "ops", 4)


@pytest.mark.django_db
def test_syncing_twice_changes_nothing():
    specs = definitions(HOURLY, NIGHTLY)
    sync_recurring(definitions=specs)
    rows = list(Job.objects.order_by("pk").values())
    assert sync_recurring(definitions=specs) == 0
    assert list(Job.objects.order_by("pk").values()) == rows


@pytest.mark.django_db(transaction=True)
def test_concurrent_syncs_create_each_row_once():
    specs = definitions(HOURLY, NIGHTLY, ("every-5", "every 5 minutes", "UTC"))
    workers = 4
    start = threading.Barrier(workers)
    changed: list[int] = []
    errors: list[BaseException] = []

    def sync() -> None:
        try:
            start.wait()
            changed.append(sync_recurring(definitions=specs))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=sync) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert sorted(Job.objects.values_list("name", flat=True)) == ["every-5", "hourly", "nightly"]
    # Every row was created by exactly one of the workers.
    assert sum(changed) == 3


@pytest.mark.django_db
def test_other_options_are_updated_without_moving_the_next_run():
    sync_recurring(definitions=definitions(HOURLY))
    row = Job.objects.get()
    assert sync_recurring(definitions=definitions(HOURLY, priority=-5, queue="slow")) == 1
    updated = Job.objects.get()
    assert (updated.priority, updated.queue) == (-5, "slow")
    assert updated.next_run_at == row.next_run_at


# The misfire rule: runs missed while no worker was up fire once, then the schedule resumes.


@pytest.mark.django_db
def test_a_missed_run_stays_due_and_fires_once():
    specs = definitions(HOURLY)
    sync_recurring(definitions=specs)
    # No worker for the last three hours: the run due three hours ago never happened.
    missed = Job.objects.get().next_run_at - timedelta(hours=4)
    Job.objects.update(next_run_at=missed)

    assert sync_recurring(definitions=specs) == 0
    assert Job.objects.get().next_run_at == missed  # kept, so still due

    (claimed,) = claim_all()
    assert claimed.next_run_at == missed
    before = timezone.now()
    assert finish(claimed, None, result=None)
    row = Job.objects.get()
    # One run for all the missed slots, then the next slot after now: no catching up.
    assert row.state == JobState.SCHEDULED
    assert row.next_run_at == first_slot("0 * * * *", "UTC", before)
    assert row.next_run_at > timezone.now()
    assert claim_all() == []


@pytest.mark.django_db
def test_a_missed_run_of_an_interval_keeps_its_anchor():
    specs = definitions(("every-10", "every 10 minutes", "UTC"))
    sync_recurring(definitions=specs)
    anchor = datetime(2020, 1, 1, 0, 5, tzinfo=UTC)
    Job.objects.update(next_run_at=anchor)
    (claimed,) = claim_all()
    assert finish(claimed, None, failure=Failure("boom"), retry_delay=None)
    row = Job.objects.get()
    clock = db_time()  # the retry's time comes from the database's clock
    assert clock < row.next_run_at <= clock + timedelta(minutes=10)
    assert (row.next_run_at - anchor) % timedelta(minutes=10) == timedelta(0)


# A changed schedule


@pytest.mark.django_db
def test_a_changed_schedule_recomputes_the_next_run():
    sync_recurring(definitions=definitions(HOURLY))
    Job.objects.update(next_run_at=datetime(2020, 1, 1, tzinfo=UTC))
    before = timezone.now()
    assert sync_recurring(definitions=definitions(("hourly", "15 4 * * *", "UTC"))) == 1
    row = Job.objects.get()
    assert row.schedule == "15 4 * * *"
    assert row.next_run_at == first_slot("15 4 * * *", "UTC", before)


@pytest.mark.django_db
def test_a_changed_timezone_recomputes_the_next_run():
    sync_recurring(definitions=definitions(NIGHTLY))
    before = timezone.now()
    assert sync_recurring(definitions=definitions(("nightly", "30 2 * * *", "Asia/Tokyo"))) == 1
    row = Job.objects.get()
    assert row.timezone == "Asia/Tokyo"
    assert row.next_run_at == first_slot("30 2 * * *", "Asia/Tokyo", before)
    assert row.next_run_at.astimezone(ZoneInfo("Asia/Tokyo")).hour == 2


@pytest.mark.django_db
def test_a_running_row_gets_its_new_schedule_when_it_finishes():
    sync_recurring(definitions=definitions(HOURLY))
    slot = Job.objects.get().next_run_at - timedelta(hours=1)
    Job.objects.update(next_run_at=slot)
    (claimed,) = claim_all()

    # A deploy changes the schedule while the job runs: the run in progress is left alone.
    yearly = ("hourly", "0 3 1 1 *", "UTC")
    assert sync_recurring(definitions=definitions(yearly)) == 1
    row = Job.objects.get()
    assert row.schedule == "0 3 1 1 *"
    assert row.state == JobState.RUNNING and row.next_run_at == slot

    before = timezone.now()
    assert finish(claimed, None, result=None)
    row = Job.objects.get()
    assert row.state == JobState.SCHEDULED
    assert row.next_run_at == first_slot("0 3 1 1 *", "UTC", before)
