"""The queues page, and list filters that list every queue and name holding rows."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from django_jobs.admin.changelist import COUNT_LIMIT, CountAtLeast
from django_jobs.admin.queues import distinct_values, job_names, job_queues, queue_rows
from django_jobs.models import Job, JobState, Pause, PauseKind, RunOutcome

from .admin_support import (
    XSS,
    XSS_ESCAPED,
    changelist_url,
    client_for,
    future,
    make_job,
    make_run,
    make_user,
    past,
)

pytestmark = pytest.mark.django_db


def queues_url() -> str:
    return reverse("admin:django_jobs_job_queues")


def fill() -> dict[str, Job]:
    """Jobs in three queues, none of them "emails" or "images" declared in code."""
    jobs = {
        "due-old": make_job("mail", queue="emails", next_run_at=past(minutes=7)),
        "due-new": make_job("mail", queue="emails", next_run_at=past(seconds=30)),
        "later": make_job("mail", queue="emails", next_run_at=future(hours=1)),
        "disabled": make_job("mail", queue="emails", next_run_at=past(hours=2), enabled=False),
        "running": make_job("resize", queue="images", state=JobState.RUNNING),
        "failed": make_job("resize", queue="images", state=JobState.FAILED, next_run_at=None),
        "done": make_job("resize", queue="images", state=JobState.SUCCEEDED, next_run_at=None),
        "default": make_job("record", next_run_at=future(days=1)),
    }
    for _ in range(3):
        make_run(jobs["done"], started_at=past(minutes=20))
    make_run(jobs["failed"], RunOutcome.FAILED, started_at=past(minutes=5))
    make_run(jobs["failed"], RunOutcome.ORPHANED, started_at=past(minutes=50))
    make_run(jobs["failed"], RunOutcome.FAILED, started_at=past(hours=2))  # too old
    make_run(jobs["due-old"], started_at=past(minutes=1))
    return jobs


def test_queue_numbers() -> None:
    fill()
    rows = {row.queue: row for row in queue_rows("default")}
    assert set(rows) >= {"default", "emails", "images"}
    emails, images = rows["emails"], rows["images"]
    assert emails.counts == {
        "due": 2,
        "scheduled": 2,  # the later one and the disabled one, as the list's filter says
        "running": 0,
        "succeeded": 0,
        "failed": 0,
        "disabled": 1,
    }
    assert images.counts == {
        "due": 0,
        "scheduled": 0,
        "running": 1,
        "succeeded": 1,
        "failed": 1,
        "disabled": 0,
    }
    # The oldest due job (the disabled one is not due).
    assert emails.oldest_wait is not None
    assert timedelta(minutes=7) <= emails.oldest_wait < timedelta(minutes=8)
    assert images.oldest_wait is None
    assert (images.runs, images.failed_runs) == (5, 2)
    assert (emails.runs, emails.failed_runs) == (1, 0)
    assert rows["default"].runs == 0


def test_counts_stop_at_the_cap(admin_client: Client) -> None:
    now = timezone.now()
    Job.objects.bulk_create(
        [
            Job(name="bulk", queue="bulk", next_run_at=now - timedelta(minutes=1))
            for _ in range(COUNT_LIMIT + 5)
        ]
    )
    row = next(row for row in queue_rows("default") if row.queue == "bulk")
    assert row.counts["due"] == COUNT_LIMIT and str(row.counts["due"]) == "10,000+"
    html = admin_client.get(queues_url()).content.decode()
    assert 'state=due">10,000+</a>' in html


def test_page_shows_every_queue_with_links(admin_client: Client) -> None:
    fill()
    response = admin_client.get(queues_url())
    assert response.status_code == 200
    html = response.content.decode()
    assert '<a href="/admin/django_jobs/job/?queue=emails">emails</a>' in html
    assert (
        '<td class="djj-num djj-count-due">'
        '<a href="/admin/django_jobs/job/?queue=emails&amp;state=due">2</a></td>' in html
    )
    assert '<td class="djj-num djj-runs">5</td>' in html
    assert '<td class="djj-num djj-failed-runs">2</td>' in html
    assert "7 min" in html  # the oldest due job of "emails" waits 7 minutes
    # Every link of the page lists exactly the jobs it counts.
    listed = admin_client.get(changelist_url() + "?queue=emails&state=due")
    assert listed.context["cl"].result_count == 2


def test_thousands_separators_and_paused_queue(admin_client: Client) -> None:
    now = timezone.now()
    Job.objects.bulk_create(
        [Job(name="bulk", queue="bulk", next_run_at=now + timedelta(hours=1)) for _ in range(1234)]
    )
    Pause.objects.create(kind=PauseKind.QUEUE, value="bulk")
    Pause.objects.create(kind=PauseKind.QUEUE, value="empty-but-paused")
    html = admin_client.get(queues_url()).content.decode()
    assert ">1,234</a>" in html
    row = html[html.index(">bulk</a>") :]
    assert row.index('djj-paused">paused') < row.index("</tr>")
    assert ">empty-but-paused</a>" in html


def test_names_and_errors_are_escaped(admin_client: Client) -> None:
    make_job(XSS, queue=XSS, next_run_at=past(minutes=1))
    html = admin_client.get(queues_url()).content.decode()
    assert XSS_ESCAPED in html and XSS not in html


def test_permissions(client: Client) -> None:
    fill()
    response = client.get(queues_url())
    assert response.status_code == 302 and "/login/" in response["Location"]
    assert client_for(make_user("nobody", "view_jobrun")).get(queues_url()).status_code == 403
    assert client_for(make_user("viewer", "view_job")).get(queues_url()).status_code == 200
    outsider = client_for(make_user("outsider", "view_job", is_staff=False))
    assert outsider.get(queues_url()).status_code == 302


def test_linked_from_the_app_page_the_list_and_the_overview(admin_client: Client) -> None:
    for url in ("/admin/django_jobs/", changelist_url(), reverse("admin:django_jobs_job_overview")):
        assert f'href="{queues_url()}"' in admin_client.get(url).content.decode(), url


def test_filters_list_every_queue_and_name_with_rows(admin_client: Client) -> None:
    fill()
    make_job("only-in-the-database", queue="reports")
    response = admin_client.get(changelist_url())
    filters = filter_choices(response)
    assert {"emails", "images", "reports", "default"} <= set(filters["queue"])
    assert {"mail", "resize", "only-in-the-database"} <= set(filters["name"])
    # The run list's name filter too.
    runs = admin_client.get("/admin/django_jobs/jobrun/")
    run_filters = filter_choices(runs)
    assert {"mail", "resize"} <= set(run_filters["job name"])


def filter_choices(response: Any) -> dict[str, list[str]]:
    changelist = response.context["cl"]
    return {
        str(spec.title): [str(choice["display"]) for choice in spec.choices(changelist)]
        for spec in changelist.filter_specs
    }


def test_distinct_values_probe_once_per_value(django_assert_num_queries: Any) -> None:
    for queue in ["b", "a", "c", "a", "b", "a"]:
        make_job("x", queue=queue)
    with django_assert_num_queries(4):  # a, b, c, then nothing more
        assert distinct_values(Job.objects.all(), "queue") == ["a", "b", "c"]
    assert distinct_values(Job.objects.all(), "queue", limit=2) == ["a", "b"]
    assert job_queues("default") == ["a", "b", "c"]
    assert job_names("default") == ["x"]


def test_queue_values_come_from_every_state() -> None:
    make_job("x", queue="only-failed", state=JobState.FAILED, next_run_at=None)
    make_job("x", queue="only-disabled", enabled=False)
    make_job("x", queue="only-cancelled", state=JobState.CANCELLED)
    make_job("x", queue="only-running", state=JobState.RUNNING)
    assert job_queues("default") == [
        "only-cancelled",
        "only-disabled",
        "only-failed",
        "only-running",
    ]


def test_running_jobs_are_counted_though_the_claim_index_leaves_them_out() -> None:
    # On PostgreSQL the claim index holds no running job (migration 0019): the running and
    # disabled counts of a queue read its running jobs from the running jobs' index.
    make_job("x", queue="busy", state=JobState.RUNNING)
    make_job("x", queue="busy", state=JobState.RUNNING, enabled=False)
    make_job("x", queue="busy", enabled=False)
    make_job("x", queue="busy", state=JobState.FAILED, enabled=False, next_run_at=None)
    row = next(row for row in queue_rows("default") if row.queue == "busy")
    assert row.counts["running"] == 2
    assert row.counts["disabled"] == 3
    assert row.counts["scheduled"] == 1


def test_the_page_lists_at_most_max_values_queues(monkeypatch: pytest.MonkeyPatch) -> None:
    from django_jobs.admin import queues

    monkeypatch.setattr(queues, "MAX_VALUES", 3)
    for name in ["q1", "q2", "q3", "q4", "q5"]:
        make_job("x", queue=name)
    assert len(queue_rows("default")) == 3


def test_a_state_counted_in_two_parts_is_capped_as_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from django_jobs.admin import queues

    monkeypatch.setattr(queues, "COUNT_LIMIT", 2)
    make_job("x", queue="two-parts", enabled=False)
    make_job("x", queue="two-parts", state=JobState.FAILED, enabled=False, next_run_at=None)
    (row,) = (row for row in queue_rows("default") if row.queue == "two-parts")
    assert row.counts["disabled"] == 2 and not isinstance(row.counts["disabled"], CountAtLeast)
    make_job("x", queue="two-parts", state=JobState.RUNNING, enabled=False)
    (row,) = (row for row in queue_rows("default") if row.queue == "two-parts")
    assert isinstance(row.counts["disabled"], CountAtLeast) and row.counts["disabled"] == 2
    for _ in range(3):
        make_job("x", queue="two-parts", enabled=False)
    (row,) = (row for row in queue_rows("default") if row.queue == "two-parts")
    assert isinstance(row.counts["disabled"], CountAtLeast)


def test_running_counts_past_the_cap_say_at_least(monkeypatch: pytest.MonkeyPatch) -> None:
    from django_jobs.admin import queues

    monkeypatch.setattr(queues, "COUNT_LIMIT", 2)
    for queue in ("a", "a", "b"):
        make_job("x", queue=queue, state=JobState.RUNNING)
    rows = {row.queue: row for row in queue_rows("default")}
    assert isinstance(rows["a"].counts["running"], CountAtLeast)
    assert isinstance(rows["b"].counts["running"], CountAtLeast)
    assert rows["a"].counts["running"] + rows["b"].counts["running"] == 3
    assert rows["a"].counts["disabled"] == 0
