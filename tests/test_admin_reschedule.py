"""Reschedule: a new time, or a new schedule for recurring jobs, kept by the next worker start."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from django.utils import timezone

from django_jobs.models import Job, JobState
from django_jobs.registry import registry
from django_jobs.sync import recurring_key, sync_recurring
from tests.clock_support import db_time

from .admin_support import (
    bulk,
    changelist_url,
    future,
    job_url,
    log_messages,
    make_job,
    messages_of,
    reschedule_url,
)

pytestmark = pytest.mark.django_db


def errors_of(response: object) -> dict[str, list[str]]:
    form = response.context["form"]  # type: ignore[attr-defined]
    return {field: [str(e) for e in errors] for field, errors in form.errors.items()}


def recurring_job() -> Job:
    """The testapp's "monthly" job (0 3 1 * *, Europe/Paris), synced as a worker start does."""
    sync_recurring()
    return Job.objects.get(unique_key=recurring_key("monthly"))


# One-off jobs: a new time


def test_form_of_a_one_off_job_asks_only_for_a_time(admin_client: Client) -> None:
    job = make_job(next_run_at=future(hours=1))
    response = admin_client.get(reschedule_url(job))
    assert list(response.context["form"].fields) == ["when"]
    assert "in 10 minutes" in response.content.decode()  # the help text


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("in 2 hours", None),
        ("2030-01-01T09:00:00+01:00", datetime(2030, 1, 1, 8, 0, tzinfo=UTC)),
        ("2030-01-01 09:00", datetime(2030, 1, 1, 9, 0, tzinfo=UTC)),  # the current timezone
        ("now", None),
    ],
)
def test_reschedule_one_off_job(admin_client: Client, when: str, expected: datetime) -> None:
    job = make_job(next_run_at=future(days=5))
    before = timezone.now()
    response = admin_client.post(reschedule_url(job), {"when": when}, follow=True)
    assert "Rescheduled 1 job." in messages_of(response)
    job.refresh_from_db()
    if expected is not None:
        assert job.next_run_at == expected
    elif when == "now":
        assert before - timedelta(seconds=1) <= job.next_run_at <= db_time()
    else:
        assert abs(job.next_run_at - (before + timedelta(hours=2))) < timedelta(seconds=5)
    assert log_messages(job) == [f"Rescheduled the next run to {job.next_run_at.isoformat()}."]


def test_naive_time_is_taken_in_the_current_timezone(admin_client: Client) -> None:
    job = make_job(next_run_at=future(days=5))
    with timezone.override("Europe/Paris"):
        admin_client.post(reschedule_url(job), {"when": "2030-07-01 09:00"})
    job.refresh_from_db()
    assert job.next_run_at == datetime(2030, 7, 1, 7, 0, tzinfo=UTC)


def test_reschedule_a_failed_job_resets_its_attempts(admin_client: Client) -> None:
    job = make_job(state=JobState.FAILED, next_run_at=None, attempts=3)
    admin_client.post(reschedule_url(job), {"when": "in 1 hour"})
    job.refresh_from_db()
    assert job.state == JobState.SCHEDULED and job.attempts == 0


@pytest.mark.parametrize(
    ("when", "error"),
    [
        ("", "This field is required."),
        ("tomorrow", 'Cannot understand "tomorrow".'),
        ("in 3 fortnights", 'Cannot understand "in 3 fortnights".'),
        ("2030-02-30 09:00", 'Cannot understand "2030-02-30 09:00".'),
    ],
)
def test_bad_time_is_a_clear_error_and_changes_nothing(
    admin_client: Client, when: str, error: str
) -> None:
    job = make_job(next_run_at=future(days=5))
    response = admin_client.post(reschedule_url(job), {"when": when})
    assert response.status_code == 200
    assert error in errors_of(response)["when"][0]
    assert Job.objects.get(pk=job.pk).next_run_at == job.next_run_at
    assert log_messages(job) == []


def test_a_running_one_off_job_cannot_be_rescheduled(admin_client: Client) -> None:
    job = make_job(state=JobState.RUNNING, locked_by="w", lock_token="t")
    response = admin_client.post(reschedule_url(job), {"when": "in 1 hour"}, follow=True)
    assert f"Cannot reschedule job record #{job.pk} while it is running." in messages_of(response)
    assert Job.objects.get(pk=job.pk).state == JobState.RUNNING


# Recurring jobs: a new time for the next run, or a new schedule and timezone


def test_form_of_a_recurring_job_offers_a_schedule_and_timezone(admin_client: Client) -> None:
    job = recurring_job()
    response = admin_client.get(reschedule_url(job))
    assert list(response.context["form"].fields) == ["when", "schedule", "timezone"]
    assert response.context["form"].initial["timezone"] == "Europe/Paris"


def test_change_the_schedule_of_a_recurring_job(admin_client: Client) -> None:
    job = recurring_job()
    response = admin_client.post(
        reschedule_url(job),
        {"when": "", "schedule": "every  10 minutes", "timezone": "America/New_York"},
        follow=True,
    )
    assert "Rescheduled 1 job." in messages_of(response)
    job.refresh_from_db()
    assert (job.schedule, job.timezone) == ("every 10 minutes", "America/New_York")
    assert job.schedule_overridden
    clock = db_time()  # the next run comes from the database's clock
    assert clock < job.next_run_at <= clock + timedelta(minutes=10)
    assert log_messages(job) == ["Changed the schedule to 'every 10 minutes' (America/New_York)."]
    html = admin_client.get(job_url(job)).content.decode()
    assert "Set in the admin; workers keep it. The code declares 0 3 1 * * (Europe/Paris)" in html


def test_move_only_the_next_run_of_a_recurring_job(admin_client: Client) -> None:
    job = recurring_job()
    admin_client.post(reschedule_url(job), {"when": "2030-01-01T00:00:00+00:00"})
    job.refresh_from_db()
    assert job.next_run_at == datetime(2030, 1, 1, tzinfo=UTC)
    assert job.schedule == "0 3 1 * *" and not job.schedule_overridden


@pytest.mark.parametrize(
    ("data", "field", "error"),
    [
        ({}, "__all__", "Enter a new time for the next run, or a new schedule."),
        (
            {"when": "in 1 hour", "schedule": "@daily", "timezone": "UTC"},
            "__all__",
            "Enter either a new time or a new schedule, not both",
        ),
        (
            {"schedule": "61 * * * *", "timezone": "UTC"},
            "schedule",
            "Invalid schedule '61 * * * *'",
        ),
        ({"schedule": "every fortnight", "timezone": "UTC"}, "schedule", "'every fortnight'"),
        ({"schedule": "0 3 * * * 2030", "timezone": "UTC"}, "schedule", "it has 6 fields"),
        (
            {"schedule": "@daily", "timezone": "Mars/Olympus"},
            "timezone",
            "Unknown timezone 'Mars/Olympus'",
        ),
        (
            {"schedule": "@daily", "timezone": ""},
            "timezone",
            "Enter the timezone of the new schedule.",
        ),
    ],
)
def test_bad_schedule_is_a_clear_error_and_changes_nothing(
    admin_client: Client, data: dict[str, str], field: str, error: str
) -> None:
    job = recurring_job()
    before = Job.objects.filter(pk=job.pk).values_list().get()
    response = admin_client.post(reschedule_url(job), data)
    assert response.status_code == 200
    assert error in " ".join(errors_of(response)[field])
    assert Job.objects.filter(pk=job.pk).values_list().get() == before
    assert error.split("'")[0] in response.content.decode().replace("&#x27;", "'")


# The next worker start keeps a schedule changed in the admin


def test_sync_keeps_a_schedule_changed_in_the_admin(admin_client: Client) -> None:
    job = recurring_job()
    admin_client.post(reschedule_url(job), {"schedule": "every 1 hour", "timezone": "UTC"})
    sync_recurring()  # a worker starts
    job.refresh_from_db()
    assert (job.schedule, job.timezone, job.schedule_overridden) == ("every 1 hour", "UTC", True)


def test_setting_the_code_schedule_again_hands_the_job_back_to_the_code(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = recurring_job()
    admin_client.post(reschedule_url(job), {"schedule": "every 1 hour", "timezone": "UTC"})
    admin_client.post(reschedule_url(job), {"schedule": "0 3 1 * *", "timezone": "Europe/Paris"})
    job.refresh_from_db()
    assert not job.schedule_overridden
    # The code's schedule changes in a deploy: the next worker start applies it.
    definition = registry["monthly"]
    from dataclasses import replace

    from django_jobs.schedules import parse_schedule

    monkeypatch.setitem(
        registry._definitions, "monthly", replace(definition, schedule=parse_schedule("@daily"))
    )
    sync_recurring()
    job.refresh_from_db()
    assert job.schedule == "@daily"


def test_sync_still_updates_the_other_options_of_an_overridden_job(admin_client: Client) -> None:
    job = recurring_job()
    admin_client.post(reschedule_url(job), {"schedule": "every 1 hour", "timezone": "UTC"})
    Job.objects.filter(pk=job.pk).update(priority=50)
    sync_recurring()
    job.refresh_from_db()
    assert job.priority == registry["monthly"].priority
    assert job.schedule == "every 1 hour"


# Bulk


def test_bulk_reschedule_shows_a_form_then_applies_it(admin_client: Client) -> None:
    a, b = make_job(next_run_at=future(days=1)), make_job(next_run_at=future(days=2))
    response = admin_client.post(changelist_url(), bulk("reschedule", a, b))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Reschedule these 2 jobs:" in html and 'name="apply"' in html
    assert list(response.context["form"].fields) == ["when"]
    data = bulk("reschedule", a, b, apply="1", when="2031-05-01T12:00:00+00:00")
    del data["index"]
    response = admin_client.post(changelist_url(), data, follow=True)
    assert "Rescheduled 2 jobs." in messages_of(response)
    for job in (a, b):
        job.refresh_from_db()
        assert job.next_run_at == datetime(2031, 5, 1, 12, tzinfo=UTC)


def test_bulk_reschedule_with_bad_input_shows_the_form_again(admin_client: Client) -> None:
    a = make_job(next_run_at=future(days=1))
    data = bulk("reschedule", a, apply="1", when="soonish")
    del data["index"]
    response = admin_client.post(changelist_url(), data)
    assert response.status_code == 200
    assert 'Cannot understand "soonish".' in errors_of(response)["when"][0]
    assert Job.objects.get(pk=a.pk).next_run_at == a.next_run_at


def test_bulk_new_schedule_refuses_one_off_jobs_one_by_one(admin_client: Client) -> None:
    recurring, one_off = recurring_job(), make_job(next_run_at=future(days=1))
    data = bulk("reschedule", recurring, one_off, apply="1", schedule="@hourly", timezone="UTC")
    del data["index"]
    response = admin_client.post(changelist_url(), data, follow=True)
    messages = messages_of(response)
    assert "Rescheduled 1 job." in messages
    assert any("it is a one-off job; reschedule it to a new time instead." in m for m in messages)
    assert Job.objects.get(pk=recurring.pk).schedule == "@hourly"
    assert Job.objects.get(pk=one_off.pk).schedule == ""
