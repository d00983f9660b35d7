"""A recurring job declared in code is disabled, never cancelled: the rule holds across a
worker restart, in the API and the admin (docs/controls.md, docs/admin.md)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from django_jobs import cancel
from django_jobs.exceptions import JobStateError
from django_jobs.models import Job, JobState
from django_jobs.recurring import recurring_key, removed_note

from .admin_support import cancel_url, client_for, job_url, make_user, messages_of
from .conftest import WorkerProcess

pytestmark = pytest.mark.django_db(transaction=True)


def restart(start_worker: Callable[..., WorkerProcess]) -> None:
    """A worker start (it syncs the recurring definitions), run to its end."""
    worker = start_worker("--burst", "--queue", "nothing-here")
    assert worker.wait() == 0, worker.output()


def monthly() -> Job:
    return Job.objects.get(unique_key=recurring_key("monthly"))


def test_a_declared_recurring_job_is_disabled_not_cancelled_across_restarts(start_worker):
    restart(start_worker)
    row = monthly()
    with pytest.raises(JobStateError, match="declared in the code"):
        cancel(row)
    assert cancel(name="monthly") == 0  # by name it is skipped, not deleted
    row.disable()
    restart(start_worker)
    row = monthly()  # the same row, still disabled: the pause lasted
    assert not row.enabled and row.state == JobState.SCHEDULED

    ops = client_for(make_user("ops", "view_job", "delete_job", "change_job"))
    assert 'href="' + cancel_url(row) not in ops.get(job_url(row)).content.decode()
    response = ops.post(cancel_url(row), {"post": "yes"}, follow=True)
    assert any("declared in the code" in m for m in messages_of(response))
    row.enable()
    restart(start_worker)
    assert monthly().enabled and Job.objects.filter(name="monthly").count() == 1


def test_a_recurring_row_the_code_no_longer_declares_can_be_cancelled_for_good(start_worker):
    stale = Job.objects.create(
        name="gone",
        schedule="0 4 * * *",
        unique_key=recurring_key("gone"),
        next_run_at=None,
    )
    restart(start_worker)
    stale.refresh_from_db()
    assert not stale.enabled and stale.note == removed_note("gone")
    cancel(stale)
    restart(start_worker)
    assert not Job.objects.filter(name="gone").exists()
