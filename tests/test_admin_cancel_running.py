"""The admin's Cancel run: its permission, forged requests, and a real browser and worker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.admin.models import CHANGE, LogEntry

from django_jobs import now
from django_jobs.models import Job, JobRun, JobState, RunOutcome

from .admin_support import action_url, client_for, job_url, make_job, make_user
from .conftest import WorkerProcess, wait_for
from .test_admin_browser import log_in, page, staff  # noqa: F401  (page is a fixture)
from .testapp.models import Execution


@pytest.mark.django_db
def test_cancel_run_needs_its_own_permission_and_a_post():
    job = make_job("until-cancelled", state=JobState.RUNNING, lock_token="t", locked_by="w")
    url = action_url(job, "cancel_running")
    # change_job and delete_job are not enough: cancelling a run has a permission of its own.
    viewer = client_for(make_user("viewer", "view_job", "change_job", "delete_job"))
    assert "Cancel run" not in viewer.get(job_url(job)).content.decode()
    assert viewer.post(url).status_code == 403
    job.refresh_from_db()
    assert job.cancel_requested_at is None

    ops = client_for(make_user("ops", "view_job", "cancel_running_job"))
    assert ops.get(url).status_code == 405
    assert "Cancel run" in ops.get(job_url(job)).content.decode()
    response = ops.post(url)
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.cancel_requested_by == "ops" and job.cancel_requested_at is not None
    entry = LogEntry.objects.get(object_id=str(job.pk), action_flag=CHANGE)
    assert "cancel run" in entry.get_change_message()


@pytest.mark.django_db
def test_cancel_run_is_offered_only_while_the_job_runs():
    waiting = make_job("until-cancelled")
    ops = client_for(make_user("ops", "view_job", "cancel_running_job"))
    assert "Cancel run" not in ops.get(job_url(waiting)).content.decode()
    response = ops.post(action_url(waiting, "cancel_running"), follow=True)
    assert "while it is scheduled" in response.content.decode()
    waiting.refresh_from_db()
    assert waiting.cancel_requested_at is None and waiting.state == JobState.SCHEDULED


@pytest.mark.browser
@pytest.mark.slow
def test_a_running_job_is_cancelled_from_the_admin_in_a_browser(
    page: Any,  # noqa: F811
    live_server: Any,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    job = now("until-cancelled")
    other = now("sleep", {"seconds": 3})
    start_worker("--concurrency", "2", "--poll-interval", "0.2", "--lock-lifetime", "3")
    wait_for(lambda: Execution.objects.filter(job_id=job.pk).exists())
    wait_for(lambda: Job.objects.filter(pk=other.pk, state=JobState.RUNNING).exists())
    user = staff("ops", "view_job", "cancel_running_job")
    log_in(page, live_server, user)
    page.goto(f"{live_server.url}{job_url(job)}")
    page.get_by_role("button", name="Cancel run").click()
    page.wait_for_url(f"{live_server.url}{job_url(job)}")
    assert "Asked the worker to stop 1 running job" in page.content()
    wait_for(lambda: Job.objects.filter(pk=job.pk, state=JobState.CANCELLED).exists(), 20)
    (run,) = JobRun.objects.filter(job_id=job.pk)
    assert run.outcome == RunOutcome.CANCELLED and run.error.startswith("Cancelled by ops")
    page.reload()
    assert "Cancel run" not in page.content()
    # The other job on the same worker ran to its end.
    wait_for(lambda: Job.objects.filter(pk=other.pk, state=JobState.SUCCEEDED).exists(), 20)
