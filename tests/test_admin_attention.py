"""What the admin tells an operator first: late or failing recurring jobs (alerts.py), jobs
held back by a pause, and a cancel a running job has not acted on yet."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from django_jobs import pause
from django_jobs.models import JobState, RunOutcome

from .admin_support import changelist_url, client_for, job_url, make_job, make_run, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def ops():
    return client_for(make_user("ops", "view_job"))


def page(client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200
    return response.content.decode()


def test_the_needs_attention_filter_lists_late_and_failing_recurring_jobs(ops):
    late = make_job(
        "monthly", schedule="0 3 1 * *", next_run_at=timezone.now() - timedelta(hours=1)
    )
    failing = make_job(
        "monthly", schedule="0 3 1 * *", next_run_at=timezone.now() + timedelta(days=3)
    )
    for _ in range(3):
        make_run(failing, RunOutcome.FAILED, error="boom")
    fine = make_job("monthly", schedule="0 3 1 * *", next_run_at=timezone.now() + timedelta(days=3))
    one_off = make_job("record", next_run_at=timezone.now() - timedelta(hours=1))
    html = page(ops, changelist_url() + "?state=attention")
    assert "needs attention" in html
    shown = {
        job.pk for job in ops.get(changelist_url() + "?state=attention").context["cl"].result_list
    }
    assert shown == {late.pk, failing.pk}
    assert fine.pk not in shown and one_off.pk not in shown

    late_page = page(ops, job_url(late))
    assert "Needs attention: late: due at" in late_page
    failing_page = page(ops, job_url(failing))
    assert "Needs attention: failing: its last 3 runs failed" in failing_page
    assert "Needs attention" not in page(ops, job_url(fine))


def test_a_job_held_back_by_a_pause_says_so(ops):
    job = make_job("record", queue="emails")
    other = make_job("record", queue="default")
    pause(queue="emails", by="alice", reason="<b>provider down</b>")
    html = page(ops, job_url(job))
    assert "Paused: queue emails was paused by alice (&lt;b&gt;provider down&lt;/b&gt;)" in html
    assert "Paused:" not in page(ops, job_url(other))


def test_a_cancel_not_acted_on_yet_is_shown_on_the_running_job(ops):
    job = make_job(
        "until-cancelled",
        state=JobState.RUNNING,
        lock_token="t",
        locked_by="w",
        cancel_requested_at=timezone.now(),
        cancel_requested_by="alice",
    )
    html = page(ops, job_url(job))
    assert "Cancel requested by alice at" in html
    assert "it keeps its lock until it ends" in html
