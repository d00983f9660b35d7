"""Pausing and resuming queues and job names: API, claim, real workers, command, admin."""

from __future__ import annotations

import time

import pytest
from django.contrib.admin.models import DELETION, LogEntry
from django.contrib.auth.models import Permission, User
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse

from django_jobs import now, pause, resume
from django_jobs.claiming.sql import database_now
from django_jobs.exceptions import InvalidOption
from django_jobs.models import Job, JobRun, JobState, Pause
from django_jobs.pauses import held_back, paused
from tests.claiming_support import claim_jobs
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


# The API and its checks


def test_pause_takes_exactly_one_valid_target():
    with pytest.raises(InvalidOption, match="exactly one of queue= and name="):
        pause()
    with pytest.raises(InvalidOption, match="exactly one of queue= and name="):
        pause(queue="emails", name="record")
    with pytest.raises(InvalidOption, match="Invalid queue ''"):
        pause(queue="")
    with pytest.raises(InvalidOption, match="Invalid job name"):
        resume(name="x" * 201)
    with pytest.raises(InvalidOption, match="Invalid reason="):
        pause(queue="emails", reason="r" * 256)
    with pytest.raises(InvalidOption, match="Invalid by="):
        pause(queue="emails", by=5)  # type: ignore[arg-type]
    assert not Pause.objects.exists()  # nothing half-written


def test_pausing_twice_keeps_one_pause_and_resume_says_whether_it_was_paused():
    first = pause(queue="emails", by="ops", reason="provider down")
    again = pause(queue="emails", by="someone else")
    assert again.pk == first.pk and again.paused_by == "ops"
    assert [str(p) for p in paused()] == ["queue emails"]
    assert resume(queue="emails") is True
    assert resume(queue="emails") is False
    assert not Pause.objects.exists()


def test_a_paused_queue_or_name_is_not_claimed_and_the_rest_is():
    emails = now("record", queue="emails")
    other = now("record", queue="default")
    limited = now("limited", queue="default")
    pause(queue="emails")
    pause(name="limited")
    assert held_back(emails).value == "emails" and held_back(limited).value == "limited"
    assert held_back(other) is None
    assert [j.pk for j in claim_jobs()] == [other.pk]
    assert Job.objects.get(pk=emails.pk).state == JobState.SCHEDULED
    resume(queue="emails")
    assert [j.pk for j in claim_jobs()] == [emails.pk]
    resume(name="limited")
    assert [j.pk for j in claim_jobs()] == [limited.pk]


def test_the_pause_is_in_every_claim_strategy(monkeypatch):
    """The ORM-only claim (old SQLite, MongoDB later) repeats the test in its UPDATE too."""
    from django_jobs.claiming import claims

    monkeypatch.setattr(claims, "claim_strategy", lambda connection: claims._claim_compare_and_set)
    held = now("record", queue="emails")
    free = now("record")
    pause(queue="emails")
    assert [j.pk for j in claim_jobs()] == [free.pk]
    assert Job.objects.get(pk=held.pk).state == JobState.SCHEDULED


# Real workers


def test_a_paused_queue_waits_across_three_workers_then_runs_at_once_on_resume(start_worker):
    """Three workers; a paused queue's jobs stay unclaimed for 5 s while another queue's run;
    after resume they start at once (PostgreSQL: NOTIFY, within 100 ms of the resume)."""
    postgres = connection.vendor == "postgresql"
    # A worker that only a wake-up can rouse on PostgreSQL; a short poll elsewhere.
    poll = "60" if postgres else "0.5"
    workers = [
        start_worker("--poll-interval", poll, "--concurrency", "4", "--worker-id", f"w{i}")
        for i in range(3)
    ]
    for w in workers:
        wait_for(lambda w=w: "listening for new jobs" in w.output() or "polling" in w.output())
    pause(queue="emails", reason="provider down")
    held = [now("record", {"n": i}, queue="emails") for i in range(20)]
    free = [now("record", {"n": i}) for i in range(20)]
    wait_for(
        lambda: (
            Job.objects.filter(pk__in=[j.pk for j in free], state=JobState.SUCCEEDED).count() == 20
        )
    )
    time.sleep(5)
    assert not JobRun.objects.filter(job__in=held).exists()
    assert Job.objects.filter(pk__in=[j.pk for j in held], state=JobState.SCHEDULED).count() == 20

    time.sleep(1)  # every worker asleep again
    resumed_at = database_now("default")
    assert resume(queue="emails")
    wait_for(
        lambda: (
            Job.objects.filter(pk__in=[j.pk for j in held], state=JobState.SUCCEEDED).count() == 20
        )
    )
    first_start = min(JobRun.objects.filter(job__in=held).values_list("started_at", flat=True))
    delay = (first_start - resumed_at).total_seconds()
    assert delay >= 0
    if postgres:
        assert delay < 0.1, f"the first paused job started {delay:.3f} s after the resume"
    else:
        assert delay < 0.5 + 1.0  # one poll interval, plus a claim
    for w in workers:
        assert w.proc.poll() is None


def test_pausing_leaves_a_running_job_to_finish(start_worker):
    job = now("sleep", {"seconds": 1.5}, queue="slow")
    after = now("record", queue="slow")
    worker = start_worker("--poll-interval", "0.2", "--concurrency", "1", "--queue", "slow")
    wait_for(lambda: Job.objects.filter(pk=job.pk, state=JobState.RUNNING).exists())
    pause(queue="slow")
    wait_for(lambda: Job.objects.filter(pk=job.pk, state=JobState.SUCCEEDED).exists())
    time.sleep(1)
    assert Job.objects.get(pk=after.pk).state == JobState.SCHEDULED
    resume(queue="slow")
    wait_for(lambda: Job.objects.filter(pk=after.pk, state=JobState.SUCCEEDED).exists())
    assert worker.proc.poll() is None


def test_a_burst_worker_leaves_paused_jobs_and_stops(start_worker):
    held = now("record", queue="emails")
    free = now("record")
    pause(name="record")
    free.refresh_from_db()
    other = now("sleep", {"seconds": 0})
    worker = start_worker("--burst", "--poll-interval", "0.2")
    assert worker.proc.wait(timeout=60) == 0
    assert Job.objects.get(pk=other.pk).state == JobState.SUCCEEDED
    assert set(Job.objects.filter(pk__in=[held.pk, free.pk]).values_list("state", flat=True)) == {
        JobState.SCHEDULED
    }


# manage.py jobs


def test_the_command_pauses_lists_and_resumes(capsys):
    call_command("jobs", "pause", "emails", "--name", "record", "--reason", "provider down")
    assert {(p.kind, p.value, p.reason) for p in Pause.objects.all()} == {
        ("queue", "emails", "provider down"),
        ("name", "record", "provider down"),
    }
    out = capsys.readouterr().out
    assert "Paused queue 'emails'." in out and "Paused job 'record'." in out
    call_command("jobs", "paused")
    listed = capsys.readouterr().out
    assert "queue 'emails': paused " in listed and "(provider down)" in listed
    assert "manage.py jobs" in Pause.objects.get(kind="queue").paused_by
    call_command("jobs", "resume", "emails", "nope")
    out = capsys.readouterr().out
    assert "Resumed queue 'emails'." in out and "Queue 'nope' was not paused." in out
    call_command("jobs", "resume", "--name", "record")
    call_command("jobs", "paused")
    assert "Nothing is paused." in capsys.readouterr().out


def test_the_command_checks_every_value_before_writing():
    with pytest.raises(CommandError, match="Invalid queue"):
        call_command("jobs", "pause", "emails", "bad\x00queue")
    with pytest.raises(CommandError, match="Name at least one queue"):
        call_command("jobs", "pause")
    assert not Pause.objects.exists()


# The admin


@pytest.fixture
def staff(db):
    user = User.objects.create_user("ops", password="pw", is_staff=True)
    user.user_permissions.add(
        Permission.objects.get(codename="view_job"), Permission.objects.get(codename="view_pause")
    )
    return user


def test_the_admin_pauses_and_resumes_with_the_pause_permission(client, staff):
    add_url = reverse("admin:django_jobs_pause_add")
    client.force_login(staff)
    # Without the permission: no add page, and a forged POST writes nothing.
    assert client.get(add_url).status_code == 403
    response = client.post(add_url, {"kind": "queue", "value": "emails", "reason": ""})
    assert response.status_code == 403 and not Pause.objects.exists()
    pause(queue="emails")
    changelist = reverse("admin:django_jobs_pause_changelist")
    forged = {"action": "resume_selected", "_selected_action": [Pause.objects.get().pk]}
    client.post(changelist, forged)
    assert Pause.objects.exists()
    Pause.objects.all().delete()

    staff.user_permissions.add(Permission.objects.get(codename="pause_jobs"))
    client.force_login(staff)
    bad = client.post(add_url, {"kind": "queue", "value": "bad\x01", "reason": ""})
    assert bad.status_code == 200 and "Invalid queue" in bad.content.decode()
    assert not Pause.objects.exists()
    response = client.post(add_url, {"kind": "name", "value": "record", "reason": "<b>x</b>"})
    assert response.status_code == 302
    made = Pause.objects.get()
    assert (made.kind, made.value, made.paused_by) == ("name", "record", "ops")
    page = client.get(changelist).content.decode()
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page
    response = client.post(changelist, {**forged, "_selected_action": [made.pk]})
    assert response.status_code == 302 and not Pause.objects.exists()
    assert LogEntry.objects.filter(action_flag=DELETION, object_repr="job name record").exists()
