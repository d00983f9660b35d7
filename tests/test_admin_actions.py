"""Actions, as bulk actions and as job page buttons: state changes, messages, log, permissions."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.test import Client

from django_jobs.admin import actions as actions_module
from django_jobs.models import Job, JobState

from .admin_support import (
    action_url,
    bulk,
    cancel_url,
    changelist_url,
    client_for,
    future,
    job_url,
    jobs_in_every_state,
    log_messages,
    make_job,
    make_user,
    messages_of,
    past,
)

pytestmark = pytest.mark.django_db


def snapshot(*jobs: Job) -> list[tuple[object, ...]]:
    """Every column of the jobs, to prove a refused request changed nothing."""
    rows = Job.objects.filter(pk__in=[job.pk for job in jobs]).order_by("pk").values_list()
    return [tuple(row) for row in rows]


# Run now


def test_run_now_makes_finished_jobs_due_again(admin_client: Client) -> None:
    done = make_job(state=JobState.SUCCEEDED, next_run_at=None, attempts=1)
    failed = make_job(state=JobState.FAILED, next_run_at=None, attempts=3)
    response = admin_client.post(changelist_url(), bulk("run_now", done, failed), follow=True)
    assert "2 jobs will run now." in messages_of(response)
    for job in (done, failed):
        job.refresh_from_db()
        assert job.state == JobState.SCHEDULED and job.attempts == 0 and job.is_due
        assert log_messages(job) == ["Ran now."]


def test_run_now_on_a_recurring_job_runs_a_copy_and_keeps_the_schedule(
    admin_client: Client,
) -> None:
    recurring = jobs_in_every_state()["recurring"]
    next_run = recurring.next_run_at
    response = admin_client.post(action_url(recurring, "run_now"), follow=True)
    assert "1 job will run now." in messages_of(response)
    recurring.refresh_from_db()
    assert recurring.next_run_at == next_run
    copy = Job.objects.exclude(pk=recurring.pk).get(name="monthly")
    assert copy.is_due and not copy.recurring
    assert log_messages(recurring) == [
        f"Ran now as one-off job #{copy.pk}; the schedule is unchanged."
    ]


def test_run_now_refuses_a_running_job_and_goes_on_with_the_others(admin_client: Client) -> None:
    running = make_job(state=JobState.RUNNING, locked_by="w", lock_token="t")
    waiting = make_job(next_run_at=future(hours=1))
    before = snapshot(running)
    response = admin_client.post(changelist_url(), bulk("run_now", running, waiting), follow=True)
    messages = messages_of(response)
    assert "1 job will run now." in messages
    assert f"Cannot run now job record #{running.pk} while it is running." in messages
    assert snapshot(running) == before
    waiting.refresh_from_db()
    assert waiting.is_due
    assert log_messages(running) == []


# Retry


def test_retry_reruns_failed_jobs_only(admin_client: Client) -> None:
    failed = make_job(state=JobState.FAILED, next_run_at=None, attempts=3, failure_count=3)
    succeeded = make_job(state=JobState.SUCCEEDED, next_run_at=None)
    response = admin_client.post(changelist_url(), bulk("retry", failed, succeeded), follow=True)
    messages = messages_of(response)
    assert "1 failed job will run again." in messages
    assert f"Cannot retry job record #{succeeded.pk} while it is succeeded." in messages
    failed.refresh_from_db()
    assert failed.state == JobState.SCHEDULED and failed.attempts == 0 and failed.is_due
    assert failed.failure_count == 3  # history is kept
    assert log_messages(failed) == ["Retried."]


def test_retry_button(admin_client: Client) -> None:
    failed = make_job(state=JobState.FAILED, next_run_at=None)
    response = admin_client.post(action_url(failed, "retry"))
    assert response.status_code == 302 and response["Location"] == job_url(failed)
    failed.refresh_from_db()
    assert failed.state == JobState.SCHEDULED


# Disable and enable


def test_disable_and_enable(admin_client: Client) -> None:
    a, b = make_job(), make_job(enabled=False)
    response = admin_client.post(changelist_url(), bulk("disable", a, b), follow=True)
    assert messages_of(response) == ["Disabled 1 job.", "1 job was already disabled."]
    a.refresh_from_db()
    assert not a.enabled
    response = admin_client.post(changelist_url(), bulk("enable", a, b), follow=True)
    assert messages_of(response) == ["Enabled 2 jobs."]
    assert log_messages(a) == ["Disabled.", "Enabled."]
    assert log_messages(b) == ["Enabled."]


def test_disable_a_running_job_lets_the_run_finish(admin_client: Client) -> None:
    running = make_job(state=JobState.RUNNING, locked_by="w", lock_token="t")
    admin_client.post(action_url(running, "disable"))
    running.refresh_from_db()
    assert not running.enabled
    assert (running.state, running.locked_by, running.lock_token) == (JobState.RUNNING, "w", "t")


def test_log_entries_record_who_what_and_when(admin_client: Client) -> None:
    job = make_job()
    admin_client.post(action_url(job, "disable"))
    entry = LogEntry.objects.get(object_id=str(job.pk))
    assert entry.user.username == "admin"
    assert entry.action_flag == CHANGE
    assert entry.change_message == "Disabled."
    assert entry.object_repr == str(job)
    assert entry.action_time is not None


# Cancel


def test_cancel_asks_first_then_deletes_waiting_jobs(admin_client: Client) -> None:
    a, b = make_job(), make_job(next_run_at=future(days=1))
    response = admin_client.post(changelist_url(), bulk("cancel", a, b))
    assert response.status_code == 200
    assert "Cancel these 2 jobs?" in response.content.decode()
    assert Job.objects.count() == 2
    data = bulk("cancel", a, b, post="yes")
    del data["index"]  # the confirmation page posts back without it, as Django's own
    response = admin_client.post(changelist_url(), data, follow=True)
    assert "Cancelled and deleted 2 jobs." in messages_of(response)
    assert not Job.objects.filter(pk__in=[a.pk, b.pk]).exists()
    entries = LogEntry.objects.filter(object_id__in=[str(a.pk), str(b.pk)])
    assert {(e.action_flag, e.change_message) for e in entries} == {(DELETION, "Cancelled.")}


def test_cancel_refuses_a_running_job_with_the_reason(admin_client: Client) -> None:
    running = make_job(state=JobState.RUNNING, locked_by="w", lock_token="t")
    before = snapshot(running)
    response = admin_client.post(cancel_url(running), {"post": "yes"}, follow=True)
    (message,) = messages_of(response)
    assert f"Cannot cancel job record #{running.pk} while it is running." in message
    assert "use Cancel run on its page" in message
    assert snapshot(running) == before


def test_cancel_page_of_one_job(admin_client: Client) -> None:
    job = make_job()
    html = admin_client.get(cancel_url(job)).content.decode()
    assert "Cancel this job?" in html and 'name="post" value="yes"' in html
    response = admin_client.post(cancel_url(job), {"post": "yes"})
    assert response.status_code == 302 and response["Location"] == changelist_url()
    assert not Job.objects.filter(pk=job.pk).exists()


# Limits and bad requests


def test_an_action_on_too_many_jobs_is_refused(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(actions_module, "ACTION_LIMIT", 2)
    jobs = [make_job() for _ in range(3)]
    before = snapshot(*jobs)
    response = admin_client.post(changelist_url(), bulk("disable", *jobs), follow=True)
    assert "An action changes at most 2 jobs at a time" in messages_of(response)[0]
    assert snapshot(*jobs) == before


def test_many_refusals_are_summed_up(admin_client: Client) -> None:
    jobs = [make_job(state=JobState.SUCCEEDED, next_run_at=None) for _ in range(12)]
    response = admin_client.post(changelist_url(), bulk("retry", *jobs), follow=True)
    messages = messages_of(response)
    assert len(messages) == 11
    assert messages[-1] == "2 more jobs were refused for the same kind of reasons."


def test_a_button_needs_post(admin_client: Client) -> None:
    job = make_job(state=JobState.FAILED, next_run_at=None)
    assert admin_client.get(action_url(job, "retry")).status_code == 405
    job.refresh_from_db()
    assert job.state == JobState.FAILED


def test_unknown_action_or_job_is_404(admin_client: Client) -> None:
    job = make_job()
    assert admin_client.post(action_url(job, "explode")).status_code == 404
    assert admin_client.post(action_url(Job(pk=987654), "retry")).status_code == 404


def test_a_job_deleted_meanwhile_is_reported(rf: object, admin_user: object) -> None:
    from django.contrib import admin
    from django.contrib.messages import get_messages
    from django.contrib.messages.storage.fallback import FallbackStorage

    job = make_job()
    Job.objects.filter(pk=job.pk).delete()  # by someone else, after the page was loaded
    request = rf.post("/")  # type: ignore[attr-defined]
    request.user = admin_user
    request.session = {}
    request._messages = FallbackStorage(request)
    model_admin = admin.site._registry[Job]
    changed = actions_module.apply(model_admin, request, [job], actions_module.ACTIONS["disable"])
    assert changed == 0
    assert [str(m) for m in get_messages(request)] == [f"Job #{job.pk} no longer exists."]


# Permissions: forged requests are refused with 403 and change nothing


FORGED = [
    # (action, the permission it needs)
    ("run_now", "run_job"),
    ("retry", "run_job"),
    ("disable", "change_job"),
    ("enable", "change_job"),
    ("reschedule", "reschedule_job"),
    ("cancel", "delete_job"),
]


@pytest.mark.parametrize(("action", "permission"), FORGED)
def test_forged_bulk_action_without_permission_is_403(action: str, permission: str) -> None:
    others = {"run_job", "change_job", "reschedule_job", "delete_job", "add_job"} - {permission}
    user = make_user("operator", "view_job", *others)
    job = make_job(state=JobState.FAILED, next_run_at=None, enabled=action != "enable")
    before = snapshot(job)
    data = bulk(action, job, post="yes", apply="1", when="in 1 hour")
    response = client_for(user).post(changelist_url(), data)
    assert response.status_code == 403
    assert snapshot(job) == before
    assert not LogEntry.objects.exists()


@pytest.mark.parametrize(("action", "permission"), FORGED)
def test_forged_button_without_permission_is_403(action: str, permission: str) -> None:
    others = {"run_job", "change_job", "reschedule_job", "delete_job", "add_job"} - {permission}
    client = client_for(make_user("operator", "view_job", *others))
    job = make_job(state=JobState.FAILED, next_run_at=None, enabled=action != "enable")
    if action == "reschedule":
        job.state = JobState.SCHEDULED
        job.save()
    before = snapshot(job)
    if action == "reschedule":
        response = client.post(f"/admin/django_jobs/job/{job.pk}/reschedule/", {"when": "now"})
    elif action == "cancel":
        response = client.post(cancel_url(job), {"post": "yes"})
    else:
        response = client.post(action_url(job, action))
    assert response.status_code == 403
    assert snapshot(job) == before
    assert not LogEntry.objects.exists()


def test_djangos_delete_selected_is_not_offered_and_a_forged_one_is_403(
    admin_client: Client,
) -> None:
    running = make_job(state=JobState.RUNNING, locked_by="w", lock_token="t")
    before = snapshot(running)
    response = admin_client.post(changelist_url(), bulk("delete_selected", running, post="yes"))
    assert response.status_code == 403
    assert snapshot(running) == before


def test_select_all_loads_at_most_one_more_job_than_the_limit(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    monkeypatch.setattr(actions_module, "ACTION_LIMIT", 2)
    jobs = [make_job() for _ in range(5)]
    before = snapshot(*jobs)
    data = bulk("disable", jobs[0], select_across="1")
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.post(changelist_url(), data)
    loads = [
        q["sql"]
        for q in queries.captured_queries
        # Whole rows, not the filters' probes for names and queues.
        if '"django_jobs_job"."max_attempts"' in q["sql"]
        or "`django_jobs_job`.`max_attempts`" in q["sql"]
    ]
    assert loads and all("LIMIT 3" in sql for sql in loads)
    messages = messages_of(admin_client.get(changelist_url()))
    assert response.status_code == 302
    assert "An action changes at most 2 jobs at a time" in messages[0]
    assert snapshot(*jobs) == before


def test_view_only_staff_posting_an_action_is_403() -> None:
    job = make_job()
    before = snapshot(job)
    response = client_for(make_user("viewer", "view_job")).post(
        changelist_url(), bulk("disable", job)
    )
    assert response.status_code == 403
    assert snapshot(job) == before


def test_anonymous_and_non_staff_posts_go_to_the_login_page(client: Client) -> None:
    job = make_job(state=JobState.FAILED, next_run_at=None)
    before = snapshot(job)
    visitor = client_for(make_user("visitor", is_staff=False))
    for c in (client, visitor):
        for response in (
            c.post(action_url(job, "retry")),
            c.post(changelist_url(), bulk("retry", job)),
            c.post(cancel_url(job), {"post": "yes"}),
        ):
            assert response.status_code == 302 and "/login/" in response["Location"]
    assert snapshot(job) == before


def test_posts_without_a_csrf_token_are_refused() -> None:
    user = make_user("root", is_superuser=True)
    client = client_for(user, enforce_csrf_checks=True)
    job = make_job(state=JobState.FAILED, next_run_at=None)
    before = snapshot(job)
    assert client.post(action_url(job, "retry")).status_code == 403
    assert client.post(changelist_url(), bulk("retry", job)).status_code == 403
    assert client.post(cancel_url(job), {"post": "yes"}).status_code == 403
    assert snapshot(job) == before


def test_a_permitted_user_can_act(client: Client) -> None:
    operator = client_for(make_user("operator", "view_job", "run_job"))
    job = make_job(state=JobState.FAILED, next_run_at=past(minutes=1))
    response = operator.post(changelist_url(), bulk("retry", job), follow=True)
    assert "1 failed job will run again." in messages_of(response)
    entry = LogEntry.objects.get()
    assert entry.user.username == "operator" and entry.action_flag != ADDITION


def test_the_operators_group_of_the_docs() -> None:
    """docs/admin.md: operators run, retry, reschedule and pause jobs, never add nor cancel."""
    from django.contrib.auth.models import Group, Permission

    operators, _ = Group.objects.get_or_create(name="operators")
    operators.permissions.set(
        Permission.objects.filter(
            content_type__app_label="django_jobs",
            codename__in=[
                "view_job",
                "run_job",
                "reschedule_job",
                "change_job",
                "view_jobrun",
                "view_worker",
            ],
        )
    )
    user = make_user("olga")
    user.groups.add(operators)
    client = client_for(user)
    failed = make_job(state=JobState.FAILED, next_run_at=None)
    waiting = make_job(next_run_at=future(hours=1))
    response = client.get(changelist_url())
    offered = {name for name, _label in response.context["action_form"].fields["action"].choices}
    assert offered == {"", "run_now", "retry", "reschedule", "disable", "enable"}
    assert client.post(action_url(failed, "retry")).status_code == 302
    assert client.post(action_url(waiting, "disable")).status_code == 302
    assert client.post(cancel_url(waiting), {"post": "yes"}).status_code == 403
    assert client.get("/admin/django_jobs/job/add/").status_code == 403
    assert client.get("/admin/django_jobs/jobrun/").status_code == 200
    assert client.get("/admin/django_jobs/worker/").status_code == 200
    assert Job.objects.get(pk=failed.pk).state == JobState.SCHEDULED
    assert not Job.objects.get(pk=waiting.pk).enabled
