"""The recurring jobs page ("cron"): every row with a schedule, its buttons and their guards."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from django.contrib.admin.models import ADDITION, DELETION, LogEntry
from django.test import Client
from django.urls import reverse

from django_jobs.admin import recurring as recurring_page
from django_jobs.models import Job, JobState, Pause, PauseKind, RunOutcome
from django_jobs.recurring import recurring_key

from .admin_support import (
    PERMISSION_QUERIES,
    XSS,
    XSS_ESCAPED,
    action_url,
    changelist_url,
    client_for,
    future,
    job_url,
    make_job,
    make_run,
    make_user,
    messages_of,
    overview_url,
    past,
)

pytestmark = pytest.mark.django_db

# Superuser: session, user, the recurring rows with their last runs, the pauses of their
# names and queues.
CRON_QUERIES = 4


def cron_url() -> str:
    return reverse("admin:django_jobs_job_recurring")


def pause_url() -> str:
    return reverse("admin:django_jobs_job_recurring_pause")


def declared(**fields: Any) -> Job:
    """The row of tests/testapp/jobs.py's "monthly", as a worker start adds it."""
    values = {
        "schedule": "0 3 1 * *",
        "timezone": "Europe/Paris",
        "next_run_at": future(days=3),
        "unique_key": recurring_key("monthly"),
        **fields,
    }
    return make_job("monthly", **values)


def rows_of(html: str) -> list[str]:
    """The page's rows, as HTML, in their order."""
    body = html[html.index('id="djj-recurring"') :]
    return [
        part.split("</tr>\n        <tr", 1)[0] for part in body.split('class="djj-cron-row')[1:]
    ]


def test_every_recurring_row_and_nothing_else(admin_client: Client) -> None:
    monthly = declared()
    gone = make_job(
        "gone",
        schedule="every 5 minutes",
        unique_key=recurring_key("gone"),
        enabled=False,
        note="Disabled when a worker started: the code no longer declares it.",
        next_run_at=future(minutes=3),
    )
    added = make_job("record", schedule="30 7 * * 1", timezone="UTC", queue="reports")
    make_job("record", next_run_at=future(minutes=5))  # a one-off job: not listed
    html = admin_client.get(cron_url()).content.decode()
    rows = rows_of(html)
    assert len(rows) == 3
    assert all(
        f'data-job-id="{job.pk}"' in row
        for row, job in zip(rows, [gone, monthly, added], strict=True)
    )
    gone_row, monthly_row, added_row = rows
    assert "djj-origin-removed" in gone_row and "no longer in code" in gone_row
    assert "djj-origin-code" in monthly_row and "declared in code" in monthly_row
    assert "djj-origin-admin" in added_row and "not declared in code" in added_row
    # The schedule in words, its expression, its timezone.
    assert "monthly on day 1 at 03:00 (Europe/Paris)" in monthly_row
    assert "<code>0 3 1 * *</code>" in monthly_row
    assert "<code>30 7 * * 1</code>" in added_row and ">UTC</span>" in added_row
    assert "queue reports" in added_row
    # The next run in the job's zone and from now; a disabled row does not say "in 3 minutes".
    assert re.search(r"CES?T</time>", monthly_row) and re.search(r"in [23]\xa0days", monthly_row)
    assert "not while disabled" in gone_row and "in 3\xa0minutes" not in gone_row
    assert 'djj-badge djj-enabled">enabled' in monthly_row
    assert 'djj-badge djj-disabled">disabled' in gone_row
    # The rule is stated.
    assert "is disabled, never cancelled" in html and "lasts across worker restarts" in html


def test_last_run_and_its_outcome_link_to_the_run(admin_client: Client) -> None:
    monthly = declared(last_started_at=past(hours=2))
    make_run(monthly, RunOutcome.SUCCEEDED, started_at=past(days=31))
    last = make_run(monthly, RunOutcome.FAILED, started_at=past(hours=2))
    never = make_job("record", schedule="every 5 minutes")
    rows = rows_of(admin_client.get(cron_url()).content.decode())
    run_url = reverse("admin:django_jobs_jobrun_change", args=[last.pk])
    assert f'<a href="{run_url}"><span class="djj-badge djj-failed">failed</span></a>' in rows[0]
    assert "2\xa0hours ago" in rows[0]
    assert "never" in rows[1] and f'data-job-id="{never.pk}"' in rows[1]


def test_next_runs_mark_the_dst_change() -> None:
    monthly = declared(next_run_at=datetime(2027, 3, 1, 2, tzinfo=UTC))
    upcoming = recurring_page.upcoming_runs(monthly, now=datetime(2027, 2, 20, tzinfo=UTC))
    assert upcoming is not None
    runs = upcoming["runs"]
    assert [run["dst_change"] for run in runs] == [False, True, False, False, False]
    assert runs[1]["local_text"] == "Thu 2027-04-01 03:00:00 CEST"
    assert (runs[1]["from_offset"], runs[1]["offset"]) == ("UTC+01:00", "UTC+02:00")


def test_the_page_shows_the_next_runs_with_their_dst_marks(admin_client: Client) -> None:
    declared(next_run_at=future(days=3))
    html = admin_client.get(cron_url()).content.decode()
    assert '<details class="djj-cron-upcoming">' in html and "Next 5 runs" in html
    # Five monthly runs from now always cross a change of daylight saving time in Paris.
    assert html.count('<tr class="djj-dst-row">') >= 1
    assert "DST change: UTC+0" in html


def test_paused_name_and_queue(admin_client: Client) -> None:
    declared()
    make_job("record", schedule="every 5 minutes", queue="reports")
    Pause.objects.create(kind=PauseKind.NAME, value="monthly", paused_by="ada", reason="audit")
    Pause.objects.create(kind=PauseKind.QUEUE, value="reports")
    monthly_row, record_row = rows_of(admin_client.get(cron_url()).content.decode())
    assert 'title="audit">paused</span>' in monthly_row and "its name, by ada" in monthly_row
    assert "held back while paused" in monthly_row
    assert "queue reports</span>" in record_row and "held back while paused" in record_row
    # The name is paused: its button resumes it; the other's name is not: it pauses it.
    assert 'name="do" value="resume"' in monthly_row and ">Resume</button>" in monthly_row
    assert 'name="do" value="pause"' in record_row


def test_escaped(admin_client: Client) -> None:
    make_job(XSS, schedule=XSS, queue=XSS, timezone="UTC")
    declared()
    Pause.objects.create(kind=PauseKind.NAME, value="monthly", reason=XSS, paused_by=XSS)
    html = admin_client.get(cron_url()).content.decode()
    assert XSS not in html
    assert html.count(XSS_ESCAPED) >= 5  # name, schedule, queue, pause reason and author
    assert "invalid schedule" in html


def test_query_count_is_fixed(admin_client: Client, django_assert_num_queries: Any) -> None:
    def measure() -> None:
        admin_client.get(cron_url())  # warm the per-process caches
        with django_assert_num_queries(CRON_QUERIES):
            assert admin_client.get(cron_url()).status_code == 200

    declared()
    measure()
    for i in range(30):
        job = make_job(f"report-{i}", schedule="every 5 minutes", queue=f"q{i % 3}")
        make_run(job)
        make_job(f"report-{i}")  # one-off jobs are not read
    Pause.objects.create(kind=PauseKind.NAME, value="report-3")
    Pause.objects.create(kind=PauseKind.QUEUE, value="q1")
    measure()


def test_query_count_of_a_user_with_permissions(django_assert_num_queries: Any) -> None:
    declared()
    for i in range(10):
        make_job(f"report-{i}", schedule="every 5 minutes")
    client = client_for(make_user("ops", "view_job", "run_job", "change_job", "pause_jobs"))
    client.get(cron_url())
    with django_assert_num_queries(CRON_QUERIES + PERMISSION_QUERIES):
        html = client.get(cron_url()).content.decode()
    assert html.count(">Run now</button>") == 11


def test_no_rows_and_more_than_max_rows(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "No recurring jobs yet" in admin_client.get(cron_url()).content.decode()
    monkeypatch.setattr(recurring_page, "MAX_ROWS", 3)
    for i in range(5):
        make_job(f"report-{i}", schedule="every 5 minutes")
    html = admin_client.get(cron_url()).content.decode()
    assert len(rows_of(html)) == 3 and "Only the first 3 recurring jobs" in html


# Permissions


def test_the_page_needs_view_job(client: Client) -> None:
    declared()
    response = client.get(cron_url())
    assert response.status_code == 302 and "/login/" in response["Location"]
    assert client_for(make_user("nobody", "view_jobrun")).get(cron_url()).status_code == 403
    outsider = client_for(make_user("outsider", "view_job", is_staff=False))
    assert outsider.get(cron_url()).status_code == 302
    viewer = client_for(make_user("viewer", "view_job"))
    response = viewer.get(cron_url())
    assert response.status_code == 200
    assert "<button" not in response.content.decode().split('id="djj-recurring"')[1]


@pytest.mark.parametrize(
    ("codename", "buttons"),
    [
        ("run_job", ["run_now"]),
        ("change_job", ["disable"]),
        ("pause_jobs", ["pause"]),
    ],
)
def test_each_button_needs_its_own_permission(codename: str, buttons: list[str]) -> None:
    declared()
    html = client_for(make_user("ops", "view_job", codename)).get(cron_url()).content.decode()
    shown = [
        name
        for name in ("run_now", "disable", "enable", "pause", "resume")
        if f'djj-cron-{name}"' in html
    ]
    assert shown == buttons


def test_disabled_row_offers_enable(admin_client: Client) -> None:
    declared(enabled=False)
    html = admin_client.get(cron_url()).content.decode()
    assert 'class="button djj-cron-enable"' in html
    assert 'class="button djj-cron-disable"' not in html


def snapshot(job: Job) -> tuple[Any, ...]:
    job.refresh_from_db()
    return (job.enabled, job.state, job.next_run_at, Job.objects.count())


@pytest.mark.parametrize(
    ("action", "permission"), [("run_now", "run_job"), ("disable", "change_job")]
)
def test_forged_actions_without_permission_are_403(action: str, permission: str) -> None:
    monthly = declared()
    before = snapshot(monthly)
    others = {"run_job", "change_job", "pause_jobs"} - {permission}
    client = client_for(make_user("ops", "view_job", *others))
    response = client.post(action_url(monthly, action), {"next": cron_url()})
    assert response.status_code == 403
    assert snapshot(monthly) == before and not LogEntry.objects.exists()


def test_forged_pause_without_permission_is_403() -> None:
    declared()
    client = client_for(make_user("ops", "view_job", "run_job", "change_job"))
    assert client.post(pause_url(), {"name": "monthly", "do": "pause"}).status_code == 403
    Pause.objects.create(kind=PauseKind.NAME, value="monthly")
    assert client.post(pause_url(), {"name": "monthly", "do": "resume"}).status_code == 403
    assert Pause.objects.filter(value="monthly").exists() and not LogEntry.objects.exists()


def test_pause_needs_post_csrf_and_a_known_request() -> None:
    declared()
    root = make_user("root", is_superuser=True)
    assert client_for(root).get(pause_url()).status_code == 405
    strict = client_for(root, enforce_csrf_checks=True)
    assert strict.post(pause_url(), {"name": "monthly", "do": "pause"}).status_code == 403
    monthly = Job.objects.get()
    assert strict.post(action_url(monthly, "disable"), {"next": cron_url()}).status_code == 403
    assert client_for(root).post(pause_url(), {"name": "monthly", "do": "x"}).status_code == 400
    anonymous = Client().post(pause_url(), {"name": "monthly", "do": "pause"})
    assert anonymous.status_code == 302 and "/login/" in anonymous["Location"]
    assert not Pause.objects.exists() and Job.objects.get().enabled


def test_an_invalid_name_is_reported(admin_client: Client) -> None:
    response = admin_client.post(pause_url(), {"name": "", "do": "pause"}, follow=True)
    assert response.redirect_chain[-1][0] == cron_url()
    assert len(messages_of(response)) == 1 and not Pause.objects.exists()


# The buttons at work


def test_disable_enable_and_run_now_come_back_to_the_page(admin_client: Client) -> None:
    monthly = declared()
    response = admin_client.post(action_url(monthly, "disable"), {"next": cron_url()}, follow=True)
    assert response.redirect_chain[-1][0] == cron_url()
    assert "Disabled 1 job." in messages_of(response)
    monthly.refresh_from_db()
    assert not monthly.enabled
    response = admin_client.post(action_url(monthly, "enable"), {"next": cron_url()}, follow=True)
    assert "Enabled 1 job." in messages_of(response)
    response = admin_client.post(action_url(monthly, "run_now"), {"next": cron_url()}, follow=True)
    copy = Job.objects.exclude(pk=monthly.pk).get()
    assert copy.name == "monthly" and not copy.schedule
    assert any(f"/job/{copy.pk}/change/" in m for m in messages_of(response))
    assert response.redirect_chain[-1][0] == cron_url()


def test_next_is_followed_only_to_the_recurring_page(admin_client: Client) -> None:
    monthly = declared()
    for other in ("https://evil.example/", "//evil.example/", changelist_url()):
        response = admin_client.post(action_url(monthly, "disable"), {"next": other})
        assert response["Location"] == job_url(monthly)


def test_pause_and_resume_by_name(admin_client: Client) -> None:
    declared()
    response = admin_client.post(pause_url(), {"name": "monthly", "do": "pause"}, follow=True)
    assert response.redirect_chain[-1][0] == cron_url()
    assert "Paused job 'monthly': no worker claims its jobs until it is resumed." in (
        messages_of(response)
    )
    pause = Pause.objects.get()
    assert (pause.kind, pause.value, pause.paused_by) == (PauseKind.NAME, "monthly", "admin")
    again = admin_client.post(pause_url(), {"name": "monthly", "do": "pause"}, follow=True)
    assert "Job 'monthly' was already paused." in messages_of(again)
    response = admin_client.post(pause_url(), {"name": "monthly", "do": "resume"}, follow=True)
    assert "Resumed job 'monthly'; idle workers were woken." in messages_of(response)
    assert not Pause.objects.exists()
    flags = list(LogEntry.objects.order_by("pk").values_list("action_flag", "change_message"))
    assert flags == [
        (ADDITION, "Paused from the recurring jobs page."),
        (DELETION, "Resumed from the recurring jobs page."),
    ]
    response = admin_client.post(pause_url(), {"name": "monthly", "do": "resume"}, follow=True)
    assert "Job 'monthly' was not paused." in messages_of(response)


def test_a_running_recurring_job_shows_its_state(admin_client: Client) -> None:
    declared(state=JobState.RUNNING, locked_by="w", last_started_at=past(seconds=5))
    html = admin_client.get(cron_url()).content.decode()
    assert 'djj-badge djj-running">running' in html


def test_linked_from_the_app_page_the_list_the_overview_and_the_queues(
    admin_client: Client,
) -> None:
    queues = reverse("admin:django_jobs_job_queues")
    for url in ("/admin/django_jobs/", changelist_url(), overview_url(), queues):
        assert f'href="{cron_url()}"' in admin_client.get(url).content.decode(), url
