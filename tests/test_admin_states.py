"""States a person can read: retrying, disabled, times with seconds and zone, plain messages."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.admin.models import ADDITION, LogEntry
from django.test import Client
from django.utils import timezone

from django_jobs.admin import display
from django_jobs.models import Job, JobState

from .admin_support import (
    action_url,
    add_url,
    bulk,
    changelist_url,
    future,
    job_url,
    log_messages,
    make_job,
    messages_of,
    past,
    reschedule_url,
)
from .conftest import WorkerProcess

pytestmark = pytest.mark.django_db


def retrying_job(**fields: object) -> Job:
    values: dict[str, object] = {
        "state": JobState.SCHEDULED,
        "attempts": 1,
        "max_attempts": 3,
        "failure_count": 1,
        "last_error": "ConnectionError: refused",
        "next_run_at": timezone.now() + timedelta(seconds=40),
    }
    values.update(fields)
    return make_job("record", **values)


def test_a_job_waiting_for_its_retry_reads_retrying(admin_client: Client) -> None:
    job = retrying_job()
    html = admin_client.get(changelist_url()).content.decode()
    assert '<span class="djj-badge djj-retrying">retrying</span>' in html
    assert '<span class="djj-note">attempt 2 of 3, next try in 40 s</span>' in html
    page = admin_client.get(job_url(job)).content.decode()
    assert "attempt 2 of 3, next try in 40 s" in page
    assert display.display_state(job) == "retrying"


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        ({"next_run_at": past(seconds=3)}, "attempt 2 of 3, due now"),
        ({"attempts": 2, "next_run_at": future(minutes=3, seconds=5)}, "attempt 3 of 3, next try"),
        ({"enabled": False}, "attempt 2 of 3, not while disabled"),
        ({"next_run_at": future(hours=2, minutes=30)}, "attempt 2 of 3, next try in 2 h "),
    ],
)
def test_retry_text(fields: dict[str, object], text: str) -> None:
    assert display.retry_text(retrying_job(**fields)).startswith(text)


@pytest.mark.parametrize(
    "fields",
    [
        {"attempts": 0},  # never tried
        {"state": JobState.FAILED, "next_run_at": None},  # out of attempts
        {"state": JobState.RUNNING},
        {"state": JobState.SUCCEEDED, "next_run_at": None},
    ],
)
def test_other_jobs_are_not_retrying(fields: dict[str, object]) -> None:
    job = retrying_job(**fields)
    assert display.display_state(job) != "retrying"
    assert "retrying" not in display.state_badges(job)


def test_state_filter_has_retrying(admin_client: Client) -> None:
    waiting = retrying_job()
    due = retrying_job(next_run_at=past(seconds=1))
    make_job("record", next_run_at=future(minutes=5))
    make_job("record", state=JobState.FAILED, attempts=3, next_run_at=None)
    make_job("record", state=JobState.RUNNING, attempts=1)
    response = admin_client.get(changelist_url() + "?state=retrying")
    assert {job.pk for job in response.context["cl"].result_list} == {waiting.pk, due.pk}
    html = response.content.decode()
    assert re.search(r'<a href="\?state=retrying"[^>]*>retrying</a>', html)


@pytest.mark.django_db(transaction=True)
def test_a_real_failed_attempt_reads_retrying(
    admin_client: Client, start_worker: Callable[..., WorkerProcess]
) -> None:
    job = make_job("fail-twice")
    worker = start_worker("--burst", "--max-jobs", "1")
    assert worker.wait() == 0, worker.output()
    job.refresh_from_db()
    assert (job.state, job.attempts) == (JobState.SCHEDULED, 1)
    html = admin_client.get(changelist_url() + "?state=retrying").content.decode()
    assert 'djj-retrying">retrying</span>' in html and "attempt 2 of 3" in html


def test_a_disabled_job_has_no_next_run_in_minutes(admin_client: Client) -> None:
    job = make_job("record", next_run_at=future(minutes=56), enabled=False)
    recurring = make_job("monthly", schedule="0 3 1 * *", next_run_at=future(days=3), enabled=False)
    html = admin_client.get(changelist_url()).content.decode()
    assert "in 56" not in html and "in 2\xa0days" not in html and "in 3\xa0days" not in html
    assert html.count(">not while disabled</time>") == 2
    page = admin_client.get(job_url(job)).content.decode()
    assert "not while disabled" in page and "in 56" not in page
    assert "in 55" not in admin_client.get(job_url(recurring)).content.decode()


def test_exact_times_have_seconds_and_a_zone(admin_client: Client) -> None:
    at = datetime(2026, 7, 1, 9, 30, 15, tzinfo=UTC)
    with timezone.override("Europe/Paris"):
        assert display.exact_time(at) == "July 1, 2026, 11:30:15 CEST"
    job = make_job("record", next_run_at=at, last_started_at=at, created_at=at)
    page = admin_client.get(job_url(job)).content.decode()
    # The site's timezone in tests is UTC.
    assert "July 1, 2026, 09:30:15 UTC" in page
    assert 'title="July 1, 2026, 09:30:15 UTC"' in page  # the hover of "next run"


@pytest.mark.parametrize(
    ("when", "shown"),
    [
        ("tomorrow", 'Cannot understand "tomorrow". Enter "now", "in 10 minutes"'),
        ("in 99999999 weeks", "outside the times a job can be scheduled for, 1900-01-01 to"),
        ("0001-01-01 00:00", "outside the times a job can be scheduled for"),
    ],
)
def test_time_errors_speak_of_what_can_be_typed(
    admin_client: Client, when: str, shown: str
) -> None:
    job = make_job("record", next_run_at=future(days=1))
    forms = [
        admin_client.post(reschedule_url(job), {"when": when}),
        admin_client.post(add_url(), {"name": "record", "data": "{}", "when": when}),
    ]
    for response in forms:
        assert response.status_code == 200
        error = " ".join(response.context["form"].errors["when"])
        assert shown in error
        for python_term in ("aware datetime", "timedelta", "ISO 8601", "+00:00'", "datetime("):
            assert python_term not in error, error
        assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d", error), error


def test_run_now_on_a_recurring_job_names_and_links_its_copy(admin_client: Client) -> None:
    recurring = make_job(
        "monthly", schedule="0 3 1 * *", timezone="Europe/Paris", next_run_at=future(days=3)
    )
    response = admin_client.post(action_url(recurring, "run_now"), follow=True)
    copy = Job.objects.exclude(pk=recurring.pk).get()
    assert not copy.schedule
    text = messages_of(response)
    assert (
        f"monthly #{recurring.pk} runs now as the one-off job "
        f'<a href="/admin/django_jobs/job/{copy.pk}/change/">monthly #{copy.pk}</a>; '
        "its schedule is unchanged." in text
    )
    assert f'<a href="/admin/django_jobs/job/{copy.pk}/change/">' in response.content.decode()
    # The copy has its own log entry, an addition; the recurring job's names the copy.
    entry = LogEntry.objects.get(object_id=str(copy.pk))
    assert entry.action_flag == ADDITION
    assert entry.change_message == f"Created by Run now of recurring job #{recurring.pk}."
    assert log_messages(recurring) == [
        f"Ran now as one-off job #{copy.pk}; the schedule is unchanged."
    ]

    # The bulk action does the same, one link per copy.
    response = admin_client.post(changelist_url(), bulk("run_now", recurring), follow=True)
    second = Job.objects.exclude(pk__in=[recurring.pk, copy.pk]).get()
    assert any(f"/job/{second.pk}/change/" in message for message in messages_of(response))
    assert LogEntry.objects.filter(object_id=str(second.pk), action_flag=ADDITION).count() == 1


def test_a_job_name_in_the_run_now_message_is_escaped(admin_client: Client) -> None:
    recurring = make_job("<b>x</b>", schedule="*/5 * * * *", next_run_at=future(days=1))
    response = admin_client.post(action_url(recurring, "run_now"), follow=True)
    html = response.content.decode()
    assert "&lt;b&gt;x&lt;/b&gt; #" in html and "<b>x</b>" not in html


def test_the_charts_times_name_their_zone(admin_client: Client) -> None:
    html = admin_client.get("/admin/django_jobs/job/overview/").content.decode()
    assert "Times in UTC." in html
    with timezone.override("Asia/Kolkata"):
        html = admin_client.get("/admin/django_jobs/job/overview/").content.decode()
    assert "Times in IST." in html
