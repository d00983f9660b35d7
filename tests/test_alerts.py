"""Late-job alerts (django_jobs.alerts): the rule, its settings, and job_overdue from workers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

import django_jobs
from django_jobs import alerts, job
from django_jobs.checks import check_retention_and_notify, check_settings
from django_jobs.exceptions import InvalidJobDefinition
from django_jobs.models import Job, JobRun, JobState, RunOutcome
from django_jobs.registry import registry
from django_jobs.sync import sync_recurring
from tests.conftest import wait_for

MINUTE = timedelta(minutes=1)


def time_ago(**kwargs: float) -> timedelta:
    return timedelta(**kwargs)


def recurring(*, due_ago: timedelta, name: str = "monthly", **fields: object) -> Job:
    """A recurring row of `name` whose next run was due `due_ago` ago (host clock)."""
    fields.setdefault("updated_at", timezone.now() - due_ago - MINUTE)
    return Job.objects.create(
        name=name,
        schedule="0 3 1 * *",
        timezone="Europe/Paris",
        next_run_at=timezone.now() - due_ago,
        **fields,
    )


def runs(job: Job, *outcomes: str) -> None:
    """Give `job` a run history, oldest first, a minute apart."""
    start = timezone.now() - timedelta(hours=1)
    for index, outcome in enumerate(outcomes):
        JobRun.objects.create(
            job=job,
            job_name=job.name,
            outcome=outcome,
            worker_id="w",
            lock_token="t",
            started_at=start + index * MINUTE,
            finished_at=start + index * MINUTE + timedelta(seconds=1),
        )


@pytest.fixture
def quick_definition() -> Iterator[str]:
    """A recurring definition of its own, late after 60 seconds."""
    job("late-quick", schedule="every 1 hours", late_after=60)(lambda j: None)
    yield "late-quick"
    registry.unregister("late-quick")


# The rule: late


@pytest.mark.django_db
def test_a_recurring_run_unclaimed_past_the_threshold_is_late():
    late = recurring(due_ago=10 * MINUTE)
    recurring(due_ago=2 * MINUTE)  # within the default 5 minutes
    assert list(alerts.late()) == [late]
    [alert] = alerts.flagged()
    assert alert.job == late and alert.late and not alert.failing
    assert alert.late_after == timedelta(seconds=300)
    assert 9 * MINUTE < alert.waited < 11 * MINUTE
    assert alert.reason.startswith(f"late: due at {late.next_run_at:%Y-%m-%d %H:%M:%S} UTC")
    assert "not started after 10 min (limit 5 min)" in alert.reason


@pytest.mark.django_db
def test_disabled_running_and_one_off_jobs_are_never_late():
    recurring(due_ago=time_ago(hours=1), enabled=False)
    recurring(due_ago=time_ago(hours=1), state=JobState.RUNNING)
    Job.objects.create(name="record", next_run_at=timezone.now() - timedelta(hours=1))
    # A name no definition registers: its rows never run, so they are not "late".
    recurring(due_ago=time_ago(hours=1), name="no-such-job")
    assert alerts.flagged() == []


@pytest.mark.django_db
def test_a_paused_name_or_queue_is_not_late_until_resumed():
    # Paused on purpose, as a disabled job is: its due run waits because someone said so.
    by_name = recurring(due_ago=time_ago(hours=1))
    by_queue = recurring(due_ago=time_ago(hours=1), queue="reports")
    django_jobs.pause(name="monthly")
    assert alerts.flagged() == []
    assert not Job.objects.filter(alerts.alert_q()).exists()
    django_jobs.resume(name="monthly")
    django_jobs.pause(queue="reports")
    assert list(alerts.late()) == [by_name]
    django_jobs.resume(queue="reports")
    assert set(alerts.late()) == {by_name, by_queue}


@pytest.mark.django_db
def test_late_after_of_a_definition_overrides_the_setting(quick_definition):
    quick = recurring(due_ago=2 * MINUTE, name=quick_definition)
    recurring(due_ago=2 * MINUTE)  # the default threshold: 5 minutes
    assert list(alerts.late()) == [quick]
    assert "(limit 60s)" in alerts.reason(quick)


@pytest.mark.django_db
def test_the_late_after_setting_and_none():
    job = recurring(due_ago=2 * MINUTE)
    with override_settings(DJANGO_JOBS={"LATE_AFTER": 60}):
        assert list(alerts.late()) == [job]
    with override_settings(DJANGO_JOBS={"LATE_AFTER": None}):
        assert not alerts.late().exists()
        # Nothing can be late: the worker starts no watcher thread at all.
        assert alerts.thresholds() == {}


# The rule: failing


@pytest.mark.django_db
def test_the_last_n_runs_failed():
    failing = recurring(due_ago=-MINUTE, last_error="ValueError: broken\nmore")
    runs(failing, RunOutcome.SUCCEEDED, RunOutcome.FAILED, RunOutcome.FAILED, RunOutcome.FAILED)
    two = recurring(due_ago=-MINUTE)
    runs(two, RunOutcome.FAILED, RunOutcome.FAILED)
    recovered = recurring(due_ago=-MINUTE)
    runs(recovered, RunOutcome.FAILED, RunOutcome.FAILED, RunOutcome.FAILED, RunOutcome.SUCCEEDED)
    assert list(alerts.failing()) == [failing]
    [alert] = alerts.flagged()
    assert alert.failing and not alert.late and alert.failures == 3
    assert alert.reason == "failing: its last 3 runs failed (last error: ValueError: broken)"


@pytest.mark.django_db
def test_timed_out_and_orphaned_runs_count_interrupted_and_cancelled_do_not_break_the_streak():
    failing = recurring(due_ago=-MINUTE)
    runs(
        failing,
        RunOutcome.TIMED_OUT,
        RunOutcome.INTERRUPTED,
        RunOutcome.ORPHANED,
        RunOutcome.CANCELLED,
        RunOutcome.FAILED,
        RunOutcome.RUNNING,
    )
    [alert] = alerts.flagged()
    assert alert.job == failing and alert.failures == 3


@pytest.mark.django_db
def test_alert_after_failures_setting():
    job = recurring(due_ago=-MINUTE)
    runs(job, RunOutcome.FAILED, RunOutcome.FAILED, RunOutcome.FAILED)
    with override_settings(DJANGO_JOBS={"ALERT_AFTER_FAILURES": 4}):
        assert not alerts.failing().exists()
    with override_settings(DJANGO_JOBS={"ALERT_AFTER_FAILURES": 1}):
        assert list(alerts.failing()) == [job]
    with override_settings(DJANGO_JOBS={"ALERT_AFTER_FAILURES": None}):
        assert alerts.flagged() == []


@pytest.mark.django_db
def test_a_job_both_late_and_failing_has_both_reasons():
    job = recurring(due_ago=10 * MINUTE)
    runs(job, RunOutcome.FAILED, RunOutcome.FAILED, RunOutcome.FAILED)
    [alert] = alerts.flagged(Job.objects.filter(queue="default"))
    assert alert.late and alert.failing
    assert [r.split(":")[0] for r in alert.reasons] == ["late", "failing"]
    assert str(alert) == f"{job}: {alert.reason}"
    assert alerts.flagged(Job.objects.filter(queue="elsewhere")) == []


# Bounds


def test_late_after_is_validated_where_it_is_declared():
    with pytest.raises(InvalidJobDefinition, match=r"late_after=0 for job 'x'.*above 0"):
        job("x", schedule="every 1 hours", late_after=0)
    with pytest.raises(InvalidJobDefinition, match=r"late_after=.*30 days"):
        job("x", schedule="every 1 hours", late_after=timedelta(days=31))
    with pytest.raises(InvalidJobDefinition, match="applies to recurring jobs only"):
        job("x", late_after=60)
    assert "x" not in registry


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"LATE_AFTER": 0}, "DJANGO_JOBS['LATE_AFTER'] is 0."),
        ({"LATE_AFTER": "5m"}, "DJANGO_JOBS['LATE_AFTER'] is '5m'."),
        ({"ALERT_AFTER_FAILURES": 0}, "DJANGO_JOBS['ALERT_AFTER_FAILURES'] is 0."),
        ({"ALERT_AFTER_FAILURES": 2.5}, "DJANGO_JOBS['ALERT_AFTER_FAILURES'] is 2.5."),
        ({"METRICS_CACHE": -1}, "DJANGO_JOBS['METRICS_CACHE'] is -1."),
        ({"METRICS_TOKEN": ""}, "DJANGO_JOBS['METRICS_TOKEN'] is ''."),
    ],
)
def test_bad_alert_and_metrics_settings_are_reported(settings, message):
    with override_settings(DJANGO_JOBS=settings):
        errors = check_settings() + check_retention_and_notify()
    assert [e.msg for e in errors] == [message]
    assert errors[0].hint


def test_none_turns_the_alerts_off_without_an_error():
    with override_settings(DJANGO_JOBS={"LATE_AFTER": None, "ALERT_AFTER_FAILURES": None}):
        assert check_settings() + check_retention_and_notify() == []


# job_overdue


@pytest.mark.django_db
def test_announce_overdue_sends_once_per_late_run():
    received = []

    def receiver(sender, job, alert, reason, **kwargs):
        received.append((job.pk, reason))

    from django_jobs.signals import job_overdue

    job_overdue.connect(receiver)
    try:
        job = recurring(due_ago=10 * MINUTE)
        recurring(due_ago=2 * MINUTE)
        assert [a.job for a in alerts.announce_overdue()] == [job]
        assert alerts.announce_overdue() == []  # announced: the same episode stays quiet
        assert received == [(job.pk, alerts.reason(job))]
        # Its next slot is late too (a new episode): announced again.
        Job.objects.filter(pk=job.pk).update(
            next_run_at=timezone.now() - 6 * MINUTE, updated_at=timezone.now() - 7 * MINUTE
        )
        assert [a.job for a in alerts.announce_overdue()] == [job]
        assert len(received) == 2
    finally:
        job_overdue.disconnect(receiver)


@pytest.mark.slow
def test_one_worker_of_many_sends_job_overdue_per_late_run(start_worker, worker_env, tmp_path):
    """Two real workers look for late jobs every second; each late run is announced once."""
    sync_recurring()
    monthly = Job.objects.get(name="monthly")
    # Due 10 minutes ago, in a queue these workers do not serve: it stays unclaimed.
    Job.objects.filter(pk=monthly.pk).update(
        next_run_at=timezone.now() - 10 * MINUTE, updated_at=timezone.now() - 11 * MINUTE
    )
    lines = tmp_path / "overdue.txt"
    worker_env["DJANGO_JOBS_TEST_OVERDUE_FILE"] = str(lines)
    workers = [
        start_worker("--queue", "elsewhere", "--lock-lifetime", "3", "--worker-id", f"w{n}")
        for n in (1, 2)
    ]

    def announced() -> list[str]:
        return lines.read_text().splitlines() if lines.exists() else []

    wait_for(announced, timeout=30)
    time.sleep(4)  # both workers look every second: still one line after several looks
    [line] = announced()
    pid, pk, _due, reason = line.split(" ", 3)
    assert int(pk) == monthly.pk and int(pid) in {w.pid for w in workers}
    assert reason.startswith("late: due at ") and "(limit 5 min)" in reason
    # The worker that sent it says so in its log.
    assert sum(f"Job {monthly} overdue: late: due at" in w.output() for w in workers) == 1

    # The next slot, late as well: a new episode, announced once more.
    Job.objects.filter(pk=monthly.pk).update(
        next_run_at=timezone.now() - 6 * MINUTE, updated_at=timezone.now() - 7 * MINUTE
    )
    wait_for(lambda: len(announced()) == 2, timeout=30)
    time.sleep(3)
    assert len(announced()) == 2
