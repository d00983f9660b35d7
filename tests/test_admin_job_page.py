"""The job page: fields, JSON, error and traceback, run history, next runs with DST, buttons."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client

from django_jobs.admin.jobs import upcoming_runs
from django_jobs.models import Job, JobState, RunOutcome

from .admin_support import (
    ALERT_QUERIES,
    JOB_PAGE_QUERIES,
    PERMISSION_QUERIES,
    XSS,
    XSS_ESCAPED,
    action_url,
    assert_page_queries,
    cancel_url,
    client_for,
    future,
    job_url,
    jobs_in_every_state,
    make_job,
    make_run,
    make_user,
    reschedule_url,
)

pytestmark = pytest.mark.django_db


def test_shows_the_job_with_pretty_json_error_and_traceback(admin_client: Client) -> None:
    job = make_job(
        "always-fails",
        data={"email": "ada@example.com", "items": [1, 2]},
        state=JobState.FAILED,
        next_run_at=None,
        attempts=2,
        max_attempts=2,
        failure_count=2,
        last_error="ValueError: broken",
        last_error_class="builtins.ValueError",
        last_traceback='Traceback (most recent call last):\n  File "x.py"\nValueError: broken',
        result={"rows": 3},
    )
    html = admin_client.get(job_url(job)).content.decode()
    assert '<pre class="djj-pre">{\n  &quot;email&quot;: &quot;ada@example.com&quot;,' in html
    assert "2 of 2" in html  # attempts
    assert "ValueError: broken" in html
    assert "builtins.ValueError" in html
    assert "Traceback (most recent call last):" in html
    assert "&quot;rows&quot;: 3" in html
    assert '<span class="djj-badge djj-failed">failed</span>' in html
    # Read-only: no save buttons, no Django delete link.
    assert 'name="_save"' not in html and 'name="_continue"' not in html
    assert "deletelink" not in html


def test_run_history_lists_the_latest_runs(admin_client: Client) -> None:
    job = make_job()
    make_run(job, RunOutcome.FAILED, error="KeyError: 'email'", worker_id="web-1:42:aaa")
    make_run(job, RunOutcome.SUCCEEDED, worker_id="web-2:43:bbb")
    other = make_job()
    make_run(other, worker_id="not-this-job")
    html = admin_client.get(job_url(job)).content.decode()
    assert "Run history" in html
    assert "web-1:42:aaa" in html and "web-2:43:bbb" in html
    assert "not-this-job" not in html
    assert "KeyError: &#x27;email&#x27;" in html
    assert '<span class="djj-badge djj-failed">failed</span>' in html
    assert "1.00 s" in html
    assert f"/admin/django_jobs/jobrun/?job__id__exact={job.pk}" in html


def test_a_job_that_never_ran_says_so(admin_client: Client) -> None:
    html = admin_client.get(job_url(make_job())).content.decode()
    assert "This job has not run yet." in html
    assert "Next runs" not in html  # one-off job


def test_a_limited_job_shows_its_cluster_limits_and_lock_key(admin_client: Client) -> None:
    html = admin_client.get(job_url(make_job("capped", limited=True))).content.decode()
    assert "Cluster limits" in html
    assert "at most 3 running at once across the cluster" in html
    html = admin_client.get(job_url(make_job("rated", limited=True))).content.decode()
    assert "at most 20 starts in any 2 s across the cluster" in html
    keyed = make_job("record", limited=True, lock_key="tenant-42")
    html = admin_client.get(job_url(keyed)).content.decode()
    assert "Lock key" in html and "tenant-42" in html
    assert "one at a time per lock key" in html
    html = admin_client.get(job_url(make_job("record"))).content.decode()
    assert "Lock key" not in html and "Cluster limits" not in html


def test_recurring_job_shows_next_five_runs_with_dst_changes(admin_client: Client) -> None:
    # Quarterly at noon in Paris: any five runs span a DST change, whatever today is.
    job = make_job("monthly", schedule="0 12 1 */3 *", timezone="Europe/Paris")
    job.next_run_at = None
    job.save()
    response = admin_client.get(job_url(job))
    html = response.content.decode()
    assert "Next runs (Europe/Paris)" in html
    assert len(response.context["upcoming"]["runs"]) == 5
    assert "DST change: UTC+0" in html
    assert "every" not in html.split("Next runs")[1].split("Run history")[0]


def test_upcoming_runs_mark_the_dst_change_in_the_jobs_timezone() -> None:
    job = Job(
        name="monthly",
        schedule="0 3 * * *",
        timezone="Europe/Paris",
        state=JobState.SCHEDULED,
        next_run_at=datetime(2026, 3, 27, 2, 0, tzinfo=UTC),  # 03:00 CET
    )
    now = datetime(2026, 3, 26, 12, 0, tzinfo=UTC)
    upcoming = upcoming_runs(job, now=now)
    assert upcoming is not None
    rows = upcoming["runs"]
    assert [row["local_text"] for row in rows] == [
        "Fri 2026-03-27 03:00:00 CET",
        "Sat 2026-03-28 03:00:00 CET",
        "Sun 2026-03-29 03:00:00 CEST",
        "Mon 2026-03-30 03:00:00 CEST",
        "Tue 2026-03-31 03:00:00 CEST",
    ]
    assert [row["dst_change"] for row in rows] == [False, False, True, False, False]
    assert (rows[2]["from_offset"], rows[2]["offset"]) == ("UTC+01:00", "UTC+02:00")


def test_upcoming_runs_of_an_overdue_or_running_job_start_from_now() -> None:
    now = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
    overdue = Job(
        name="monthly",
        schedule="every 1 hour",
        timezone="UTC",
        state=JobState.SCHEDULED,
        next_run_at=now - timedelta(hours=5),
    )
    rows = upcoming_runs(overdue, now=now)["runs"]  # type: ignore[index]
    assert rows[0]["at"] == now - timedelta(hours=5)  # still the next run: it fires at once
    assert rows[1]["at"] > now
    running = Job(
        name="monthly",
        schedule="every 1 hour",
        timezone="UTC",
        state=JobState.RUNNING,
        next_run_at=now - timedelta(minutes=1),
    )
    rows = upcoming_runs(running, now=now)["runs"]  # type: ignore[index]
    assert all(row["at"] > now for row in rows)


def test_everything_is_escaped(admin_client: Client) -> None:
    job = make_job(
        XSS,
        data={XSS: XSS},
        queue=XSS,
        state=JobState.FAILED,
        next_run_at=None,
        last_error=XSS,
        last_error_class=XSS,
        last_traceback=XSS,
        result=XSS,
        progress=0.1,
        progress_message=XSS,
        unique_key=XSS,
        lock_key=XSS,
        limited=True,
    )
    make_run(job, RunOutcome.FAILED, error=XSS, worker_id=XSS)
    html = admin_client.get(job_url(job)).content.decode()
    assert "<script>alert" not in html
    assert XSS_ESCAPED in html


def buttons(client: Client, job: Job) -> set[str]:
    html = client.get(job_url(job)).content.decode()
    found = set()
    for name in ["run_now", "retry", "reschedule", "disable", "enable", "cancel", "cancel_running"]:
        # The whole class name: djj-tool-cancel is the start of djj-tool-cancel_running.
        if re.search(f'djj-tool-{name}[" ]', html):
            found.add(name)
    return found


def test_buttons_follow_the_state(admin_client: Client) -> None:
    jobs = jobs_in_every_state()
    assert buttons(admin_client, jobs["scheduled"]) == {
        "run_now",
        "reschedule",
        "disable",
        "cancel",
    }
    assert buttons(admin_client, jobs["running"]) == {"disable", "cancel_running"}
    assert buttons(admin_client, jobs["failed"]) == {"run_now", "retry", "reschedule", "disable"}
    assert buttons(admin_client, jobs["succeeded"]) == {"run_now", "disable"}
    assert buttons(admin_client, jobs["disabled"]) == {"run_now", "reschedule", "enable", "cancel"}
    # "monthly" is declared in code: it is disabled, never cancelled (it would come back).
    assert buttons(admin_client, jobs["recurring"]) == {"run_now", "reschedule", "disable"}


def test_buttons_follow_the_permissions() -> None:
    job = make_job(state=JobState.FAILED, next_run_at=None)

    def visible(*codenames: str) -> set[str]:
        user = make_user("u-" + "-".join(codenames), "view_job", *codenames)
        return buttons(client_for(user), job)

    assert visible() == set()
    assert visible("run_job") == {"run_now", "retry"}
    assert visible("reschedule_job") == {"reschedule"}
    assert visible("change_job") == {"disable"}
    assert visible("delete_job") == set()  # a failed job is not waiting: nothing to cancel


def test_buttons_are_post_forms_with_csrf_and_links_to_forms(admin_client: Client) -> None:
    job = make_job(next_run_at=future(hours=1))
    html = admin_client.get(job_url(job)).content.decode()
    assert f'<form method="post" action="{action_url(job, "run_now")}">' in html
    assert 'name="csrfmiddlewaretoken"' in html.split(action_url(job, "run_now"))[1][:200]
    assert f'href="{reschedule_url(job)}"' in html
    assert f'href="{cancel_url(job)}"' in html


def test_posting_the_change_form_is_refused(admin_client: Client) -> None:
    job = make_job(priority=1)
    response = admin_client.post(job_url(job), {"priority": "99", "_save": "Save"})
    assert response.status_code == 405
    job.refresh_from_db()
    assert job.priority == 1


def test_permissions(client: Client) -> None:
    job = make_job()
    assert client.get(job_url(job)).status_code == 302  # anonymous: to the login page
    assert client_for(make_user("visitor", is_staff=False)).get(job_url(job)).status_code == 302
    assert client_for(make_user("staff")).get(job_url(job)).status_code == 403
    assert client_for(make_user("viewer", "view_job")).get(job_url(job)).status_code == 200


def test_missing_job_redirects_with_a_message(admin_client: Client) -> None:
    response = admin_client.get(job_url(Job(pk=999999)), follow=True)
    assert "doesn\u2019t exist" in response.content.decode()


def test_query_count_is_fixed(admin_client: Client, django_assert_num_queries: object) -> None:
    job = make_job("monthly", schedule="every 1 hour", state=JobState.FAILED, last_error="x")
    make_run(job)
    assert_page_queries(
        admin_client, job_url(job), JOB_PAGE_QUERIES + ALERT_QUERIES, django_assert_num_queries
    )
    for _ in range(40):
        make_run(job, RunOutcome.FAILED, error="boom")
    response = assert_page_queries(
        admin_client, job_url(job), JOB_PAGE_QUERIES + ALERT_QUERIES, django_assert_num_queries
    )
    assert len(response.context["runs"]) == 20
    viewer = client_for(make_user("viewer", "view_job", "run_job", "change_job"))
    assert_page_queries(
        viewer,
        job_url(job),
        JOB_PAGE_QUERIES + ALERT_QUERIES + PERMISSION_QUERIES,
        django_assert_num_queries,
    )
