"""Bulk work beyond a page: retry or delete every job of a filtered list, in batches."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.admin.models import CHANGE, DELETION, LogEntry
from django.test import Client
from django.urls import reverse

from django_jobs.admin import bulk as bulk_module
from django_jobs.models import Job, JobState
from django_jobs.recurring import recurring_key

from .admin_support import (
    changelist_url,
    client_for,
    future,
    job_url,
    make_job,
    make_run,
    make_user,
    messages_of,
    past,
)

pytestmark = pytest.mark.django_db

FILTER = "?state=failed&name=refund-order"


def failed(name: str = "refund-order", **fields: Any) -> Job:
    return make_job(name, state=JobState.FAILED, next_run_at=None, attempts=3, **fields)


def finished(state: str = JobState.SUCCEEDED, **fields: Any) -> Job:
    return make_job(state=state, next_run_at=None, attempts=1, **fields)


def snapshot() -> list[tuple[object, ...]]:
    """Every column of every job, to prove a refused request changed nothing."""
    return [tuple(row) for row in Job.objects.order_by("pk").values_list()]


def whole(action: str, any_job: Job, **extra: str) -> dict[str, Any]:
    """The POST of an action with "Select all N jobs" (select_across), as the list sends it."""
    return {
        "action": action,
        "_selected_action": [str(any_job.pk)],
        "select_across": "1",
        "index": "0",
        **extra,
    }


def confirm(client: Client, url: str, action: str, any_job: Job) -> tuple[Any, dict[str, Any]]:
    """Ask for the confirmation page; returns it and the POST its button sends."""
    response = client.post(url, whole(action, any_job))
    assert response.status_code == 200
    context = response.context
    data = whole(action, any_job, post="yes")
    data.update(counted=str(context["counted"]), up_to=str(context["up_to"]))
    return response, data


def delete_url(job: Job) -> str:
    return reverse("admin:django_jobs_job_delete_finished", args=[job.pk])


# Retry over a whole filter


def test_the_confirmation_page_counts_the_whole_filter_and_changes_nothing(
    admin_client: Client,
) -> None:
    jobs = [failed() for _ in range(5)]
    failed("other")
    finished(name="refund-order")
    before = snapshot()
    response, _data = confirm(admin_client, changelist_url() + FILTER, "retry", jobs[0])
    html = response.content.decode()
    assert (
        "This retries 5 failed jobs matching state=failed&amp;name=refund-order. Continue?" in html
    )
    assert 'value="Yes, retry them"' in html
    assert snapshot() == before
    assert not LogEntry.objects.exists()


def test_bulk_retry_runs_in_batches_and_leaves_one_log_entry(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bulk_module, "BATCH_SIZE", 2)
    jobs = [failed() for _ in range(5)]
    other = failed("other")
    done = finished(name="refund-order")
    _page, data = confirm(admin_client, changelist_url() + FILTER, "retry", jobs[0])
    response = admin_client.post(changelist_url() + FILTER, data, follow=True)
    assert messages_of(response) == ["Retried 5 failed jobs."]
    for job in jobs:
        job.refresh_from_db()
        assert (job.state, job.attempts, job.is_due) == (JobState.SCHEDULED, 0, True)
    assert Job.objects.get(pk=other.pk).state == JobState.FAILED
    assert Job.objects.get(pk=done.pk).state == JobState.SUCCEEDED
    entry = LogEntry.objects.get()
    assert entry.action_flag == CHANGE and entry.user.username == "admin"
    assert entry.object_id is None
    assert entry.change_message == "Retried 5 jobs matching state=failed&name=refund-order."
    assert entry.object_repr == "5 jobs matching state=failed&name=refund-order"


def test_each_batch_is_its_own_statement_over_at_most_batch_size_ids(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bulk_module, "BATCH_SIZE", 2)
    jobs = [failed() for _ in range(5)]
    seen: list[tuple[int, int]] = []
    changed = bulk_module.run_batches(
        Job.objects.all(),
        bulk_module.BULK_ACTIONS["retry"],
        on_batch=lambda count, last: seen.append((count, last)),
    )
    assert changed == 5
    ids = sorted(job.pk for job in jobs)
    assert seen == [(2, ids[1]), (4, ids[3]), (5, ids[4])]


def test_a_job_claimed_between_batches_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bulk_module, "BATCH_SIZE", 2)
    jobs = sorted((failed() for _ in range(5)), key=lambda job: job.pk)
    claimed = jobs[3]

    def a_worker_claims_it(count: int, last: int) -> None:
        if count == 2:  # after the first batch, before the second reads its ids
            Job.objects.filter(pk=claimed.pk).update(
                state=JobState.RUNNING, lock_token="t", locked_by="w"
            )

    changed = bulk_module.run_batches(
        Job.objects.all(), bulk_module.BULK_ACTIONS["retry"], on_batch=a_worker_claims_it
    )
    assert changed == 4
    claimed.refresh_from_db()
    assert (claimed.state, claimed.lock_token, claimed.attempts) == (JobState.RUNNING, "t", 3)


def test_the_update_checks_the_state_again() -> None:
    """A row read as failed and claimed before its batch's UPDATE is not touched."""
    a, b = failed(), failed()
    Job.objects.filter(pk=b.pk).update(state=JobState.RUNNING, lock_token="t")
    assert Job.objects.filter(pk__in=[a.pk, b.pk]).retry() == 1
    assert Job.objects.get(pk=b.pk).state == JobState.RUNNING


def test_jobs_that_changed_after_the_count_are_reported_as_skipped(admin_client: Client) -> None:
    jobs = [failed() for _ in range(5)]
    _page, data = confirm(admin_client, changelist_url() + FILTER, "retry", jobs[0])
    Job.objects.filter(pk=jobs[2].pk).update(state=JobState.RUNNING, lock_token="t")
    response = admin_client.post(changelist_url() + FILTER, data, follow=True)
    assert messages_of(response) == [
        "Retried 4 failed jobs.",
        "Skipped 1 of the 5 jobs counted: it changed meanwhile (a worker took it, or someone "
        "else acted on it) and was left as it was.",
    ]
    assert Job.objects.get(pk=jobs[2].pk).state == JobState.RUNNING
    (entry,) = LogEntry.objects.all()
    assert entry.change_message == (
        "Retried 4 jobs matching state=failed&name=refund-order. Skipped 1 that changed meanwhile."
    )


def test_nothing_changed_leaves_no_log_entry(admin_client: Client) -> None:
    jobs = [failed() for _ in range(2)]
    _page, data = confirm(admin_client, changelist_url() + FILTER, "retry", jobs[0])
    Job.objects.update(state=JobState.RUNNING, lock_token="t")  # workers took them all
    response = admin_client.post(changelist_url() + FILTER, data, follow=True)
    assert messages_of(response) == [
        "Skipped 2 of the 2 jobs counted: they changed meanwhile (a worker took them, or "
        "someone else acted on them) and were left as they were."
    ]
    assert not LogEntry.objects.exists()


def test_jobs_added_after_the_count_are_left_alone(admin_client: Client) -> None:
    jobs = [failed() for _ in range(3)]
    _page, data = confirm(admin_client, changelist_url() + FILTER, "retry", jobs[0])
    late = failed()
    response = admin_client.post(changelist_url() + FILTER, data, follow=True)
    assert messages_of(response) == ["Retried 3 failed jobs."]
    assert Job.objects.get(pk=late.pk).state == JobState.FAILED


def test_a_search_and_a_queue_filter_choose_the_jobs(admin_client: Client) -> None:
    ada = failed(data={"email": "ada@example.com"}, queue="emails")
    failed(data={"email": "bob@example.com"}, queue="emails")
    failed(data={"email": "ada@example.com"})
    url = changelist_url() + "?queue=emails&q=email:ada@example.com"
    page, data = confirm(admin_client, url, "retry", ada)
    assert page.context["counted"] == 1
    admin_client.post(url, data)
    assert list(Job.objects.filter(state=JobState.SCHEDULED)) == [Job.objects.get(pk=ada.pk)]


@pytest.mark.parametrize("flag", ["on", "True", "1"])
def test_select_across_is_read_as_django_reads_it(admin_client: Client, flag: str) -> None:
    jobs = [finished() for _ in range(3)]
    data = {**whole("delete_finished", jobs[0]), "select_across": flag}
    assert "This deletes 3 finished jobs of the whole list." in (
        admin_client.post(changelist_url(), data).content.decode()
    )


def test_retry_of_a_selection_stays_per_job(admin_client: Client) -> None:
    """Without "Select all", retry acts on the ticked jobs at once, one log entry each."""
    a = failed()
    response = admin_client.post(
        changelist_url(), {"action": "retry", "_selected_action": [a.pk], "index": "0"}
    )
    assert response.status_code == 302
    assert Job.objects.get(pk=a.pk).state == JobState.SCHEDULED


def test_nothing_to_retry_says_so(admin_client: Client) -> None:
    done = finished()
    response = admin_client.post(changelist_url(), whole("retry", done), follow=True)
    assert messages_of(response) == ["None of these jobs can be retried: only failed jobs are."]


# Delete finished jobs


def test_delete_finished_never_touches_pending_running_or_declared_recurring_rows(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bulk_module, "BATCH_SIZE", 2)
    doomed = [
        finished(),
        finished(JobState.FAILED),
        finished(JobState.CANCELLED),
        finished(name="monthly"),  # a one-off of a recurring job's name
    ]
    run = make_run(doomed[0])
    kept = [
        make_job(next_run_at=future(minutes=5)),
        make_job(next_run_at=past(minutes=1)),
        make_job(next_run_at=past(minutes=1), enabled=False),
        make_job(state=JobState.RUNNING, lock_token="t", locked_by="w"),
        # The row of a recurring job the code declares: the next worker start would add it
        # again, so it is never deleted, whatever its state.
        make_job(
            "monthly",
            schedule="0 3 1 * *",
            timezone="Europe/Paris",
            state=JobState.FAILED,
            unique_key=recurring_key("monthly"),
        ),
    ]
    before = [tuple(row) for row in Job.objects.filter(pk__in=[j.pk for j in kept]).values_list()]
    page, data = confirm(admin_client, changelist_url(), "delete_finished", kept[0])
    assert "This deletes 4 finished jobs of the whole list. Continue?" in page.content.decode()
    response = admin_client.post(changelist_url(), data, follow=True)
    assert messages_of(response) == ["Deleted 4 finished jobs."]
    assert not Job.objects.filter(pk__in=[j.pk for j in doomed]).exists()
    after = [tuple(row) for row in Job.objects.filter(pk__in=[j.pk for j in kept]).values_list()]
    assert after == before
    run.refresh_from_db()
    assert run.job_id is None and run.job_name == "record"  # the history stays
    entry = LogEntry.objects.get()
    assert entry.action_flag == DELETION
    assert entry.change_message == "Deleted 4 jobs of the whole list."


def test_delete_finished_jobs_older_than_a_filter(admin_client: Client) -> None:
    """ "Discard every failed job of name X": the filters choose, the rule keeps to finished."""
    old = [failed() for _ in range(3)]
    waiting = make_job("refund-order", next_run_at=future(hours=1))
    page, data = confirm(admin_client, changelist_url() + FILTER, "delete_finished", old[0])
    assert page.context["counted"] == 3
    admin_client.post(changelist_url() + FILTER, data)
    assert list(Job.objects.all()) == [Job.objects.get(pk=waiting.pk)]


def test_delete_every_failed_job_older_than_a_week(admin_client: Client) -> None:
    old = [failed(last_finished_at=past(days=8)) for _ in range(3)]
    recent = failed(last_finished_at=past(days=2))
    old_success = finished(name="refund-order", last_finished_at=past(days=9))
    url = changelist_url() + FILTER + "&finished=7d"
    listed = admin_client.get(url).context["cl"].result_list
    assert sorted(job.pk for job in listed) == sorted(job.pk for job in old)
    page, data = confirm(admin_client, url, "delete_finished", old[0])
    assert (
        "This deletes 3 finished jobs matching state=failed&amp;name=refund-order&amp;"
        "finished=7d. Continue?" in page.content.decode()
    )
    admin_client.post(url, data)
    assert sorted(Job.objects.values_list("pk", flat=True)) == [recent.pk, old_success.pk]
    assert LogEntry.objects.get().change_message == (
        "Deleted 3 jobs matching state=failed&name=refund-order&finished=7d."
    )


def test_the_finished_filter_ignores_other_values(admin_client: Client) -> None:
    job = failed(last_finished_at=past(days=8))
    for value in ["2d", "", "7d'", "1w"]:
        response = admin_client.get(changelist_url() + "?finished=" + value)
        assert response.status_code == 200
        assert [j.pk for j in response.context["cl"].result_list] == [job.pk]


def test_delete_finished_of_a_selection_asks_first(admin_client: Client) -> None:
    done, waiting = finished(), make_job()
    data = {
        "action": "delete_finished",
        "_selected_action": [str(done.pk), str(waiting.pk)],
        "index": "0",
    }
    page = admin_client.post(changelist_url(), data)
    assert "This deletes 1 finished job among 2 selected jobs. Continue?" in page.content.decode()
    assert Job.objects.count() == 2
    data.update(post="yes", counted="1", up_to=str(page.context["up_to"]))
    response = admin_client.post(changelist_url(), data, follow=True)
    assert messages_of(response) == ["Deleted 1 finished job."]
    assert list(Job.objects.all()) == [waiting]
    assert LogEntry.objects.get().change_message == "Deleted 1 job among 2 selected jobs."


def test_the_delete_button_of_a_finished_job(admin_client: Client) -> None:
    done = finished()
    html = admin_client.get(job_url(done)).content.decode()
    assert f'href="{delete_url(done)}"' in html and "djj-tool-delete_finished" in html
    page = admin_client.get(delete_url(done)).content.decode()
    assert f"Delete record #{done.pk} (succeeded)? Its run history stays." in page
    response = admin_client.post(delete_url(done), {"post": "yes"}, follow=True)
    assert response.redirect_chain[-1][0] == changelist_url()
    assert messages_of(response) == [f"Deleted record #{done.pk}."]
    assert not Job.objects.filter(pk=done.pk).exists()
    entry = LogEntry.objects.get()
    assert (entry.action_flag, entry.object_id) == (DELETION, str(done.pk))
    assert entry.change_message == "Deleted (finished)."


@pytest.mark.parametrize("kind", ["scheduled", "running", "declared"])
def test_delete_refuses_a_job_that_is_not_finished(admin_client: Client, kind: str) -> None:
    if kind == "scheduled":
        job = make_job(next_run_at=future(hours=1))
    elif kind == "running":
        job = make_job(state=JobState.RUNNING, lock_token="t", locked_by="w")
    else:
        job = make_job(
            "monthly",
            schedule="0 3 1 * *",
            state=JobState.FAILED,
            unique_key=recurring_key("monthly"),
        )
    assert "djj-tool-delete_finished" not in admin_client.get(job_url(job)).content.decode()
    page = admin_client.get(delete_url(job), follow=True)
    assert page.redirect_chain[-1][0] == job_url(job)
    assert f"Job {job} cannot be deleted: only finished jobs" in messages_of(page)[0]
    before = snapshot()
    response = admin_client.post(delete_url(job), {"post": "yes"}, follow=True)
    assert response.redirect_chain[-1][0] == job_url(job)
    (message,) = messages_of(response)
    expected = "declared in the code" if kind == "declared" else f"while it is {kind}"
    assert expected in message
    assert snapshot() == before
    assert not LogEntry.objects.exists()


# Permissions, forged and bad requests: 403 or a page, never a change nor a 500


@pytest.mark.parametrize(
    ("action", "permission"), [("retry", "run_job"), ("delete_finished", "delete_job")]
)
def test_forged_bulk_without_permission_is_403(action: str, permission: str) -> None:
    others = {"run_job", "change_job", "reschedule_job", "delete_job", "add_job"} - {permission}
    client = client_for(make_user("operator", "view_job", *others))
    jobs = [failed() for _ in range(3)]
    before = snapshot()
    data = whole(action, jobs[0], post="yes", counted="3", up_to=str(jobs[-1].pk))
    assert client.post(changelist_url() + FILTER, data).status_code == 403
    assert client.post(changelist_url() + FILTER, whole(action, jobs[0])).status_code == 403
    if action == "delete_finished":
        assert client.post(delete_url(jobs[0]), {"post": "yes"}).status_code == 403
        assert client.get(delete_url(jobs[0])).status_code == 403
    assert snapshot() == before
    assert not LogEntry.objects.exists()


def test_the_permitted_user_sees_the_actions() -> None:
    client = client_for(make_user("cleaner", "view_job", "delete_job"))
    done = finished()
    offered = client.get(changelist_url()).context["action_form"].fields["action"].choices
    assert "delete_finished" in {name for name, _label in offered}
    assert "retry" not in {name for name, _label in offered}
    _page, data = confirm(client, changelist_url(), "delete_finished", done)
    assert client.post(changelist_url(), data).status_code == 302
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    "bad",
    [
        {"counted": "abc"},
        {"up_to": "-1"},
        {"up_to": "²"},
        {"counted": "9" * 40},
        {"counted": ""},
        {"up_to": "1e9"},
    ],
)
def test_bad_numbers_show_the_confirmation_again(admin_client: Client, bad: dict[str, str]) -> None:
    jobs = [failed() for _ in range(2)]
    before = snapshot()
    data = whole("retry", jobs[0], post="yes", counted="2", up_to=str(jobs[-1].pk))
    data.update(bad)
    response = admin_client.post(changelist_url() + FILTER, data)
    assert response.status_code == 200 and response.context["counted"] == 2
    assert snapshot() == before


@pytest.mark.parametrize(
    "query",
    [
        "?name=%00",
        "?q=%00",
        "?state=bogus",
        "?name=%ED%A0%80",
        "?q=email:%22",
        "?queue=" + "x" * 500,
    ],
)
def test_odd_filters_never_fail(admin_client: Client, query: str) -> None:
    job = failed()
    response = admin_client.post(changelist_url() + query, whole("delete_finished", job))
    assert response.status_code in (200, 302)


@pytest.mark.parametrize("action", ["delete_finished", "retry", "disable"])
@pytest.mark.parametrize("ids", ["abc", "1.5", "", "²", "9" * 20, "9" * 5000, "-1"])
def test_forged_ids_are_400(admin_client: Client, action: str, ids: str) -> None:
    finished(), failed()
    before = snapshot()
    for extra in ({}, {"post": "yes", "counted": "2", "up_to": "99"}):
        data = {"action": action, "_selected_action": ["1", ids], "index": "0", **extra}
        assert admin_client.post(changelist_url(), data).status_code == 400
    assert snapshot() == before


def test_the_finished_filter_lists_the_latest_finish_first(admin_client: Client) -> None:
    """While "finished" filters, rows come by finish time, newest first (its partial index on
    PostgreSQL and SQLite, migration 0015), not by id; sorting by a column still wins."""
    # Made in this order, so by id the list would read last, middle, first.
    first = finished(last_finished_at=past(days=8))
    middle = finished(last_finished_at=past(days=10))
    last = finished(last_finished_at=past(days=40))
    finished(last_finished_at=past(days=2))  # not a week ago: not listed
    listed = admin_client.get(changelist_url() + "?finished=7d").context["cl"].result_list
    assert [job.pk for job in listed] == [first.pk, middle.pk, last.pk]
    by_id = admin_client.get(changelist_url() + "?finished=7d&o=-1").context["cl"].result_list
    assert [job.pk for job in by_id] == sorted((job.pk for job in by_id), reverse=True)
