"""`manage.py jobstatus`: the health check's report and exit status."""

from __future__ import annotations

import signal
import socket
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from django_jobs.models import Job, JobState, Worker
from tests.conftest import wait_for


def status(*args: str) -> tuple[int, str, str]:
    """Run jobstatus; returns (exit status, stdout, stderr)."""
    out, err = StringIO(), StringIO()
    try:
        call_command("jobstatus", *args, stdout=out, stderr=err)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def worker_row(worker_id: str, *, age: float = 1, hostname: str = "web-1") -> Worker:
    return Worker.objects.create(
        worker_id=worker_id,
        hostname=hostname,
        pid=4242,
        queues=[],
        concurrency=4,
        last_heartbeat_at=timezone.now() - timedelta(seconds=age),
        # Its own expiry, as a worker with a 30-second lock lifetime sets it.
        expires_at=timezone.now() - timedelta(seconds=age - 30),
    )


def due_job(*, waited: float, queue: str = "default") -> Job:
    return Job.objects.create(
        name="record", queue=queue, next_run_at=timezone.now() - timedelta(seconds=waited)
    )


@pytest.mark.django_db
def test_no_live_worker_is_unhealthy():
    code, out, err = status()
    assert code == 1
    assert "Workers: 0 live, 0 stale" in out
    assert "UNHEALTHY: 0 live worker(s), fewer than 1" in err


@pytest.mark.django_db
def test_a_fresh_heartbeat_is_healthy():
    worker_row("web-1:4242:abc123", age=2)
    code, out, err = status()
    assert code == 0, err
    assert "Workers: 1 live, 0 stale" in out
    assert "web-1:4242:abc123" in out
    assert out.rstrip().endswith("OK")


@pytest.mark.django_db
def test_a_stale_heartbeat_does_not_count_as_live():
    worker_row("old", age=600)
    code, out, _ = status("--max-heartbeat-age", "60")
    assert code == 1
    assert "0 live, 1 stale" in out
    assert status("--max-heartbeat-age", "900")[0] == 0


@pytest.mark.django_db
def test_due_jobs_late_beyond_the_threshold_fail_the_check():
    worker_row("w1")
    due_job(waited=600)
    due_job(waited=0)
    code, out, err = status("--max-lateness", "60")
    assert code == 1
    assert "Jobs: 2 due, the oldest waiting 6" in out
    assert "1 late (over 60s)" in out
    assert "UNHEALTHY: 1 due job(s) waiting longer than 60s" in err
    assert status("--max-lateness", "3600")[0] == 0


@pytest.mark.django_db
def test_lateness_can_be_judged_for_some_queues_only():
    worker_row("w1")
    due_job(waited=600, queue="reports")
    assert status("--max-lateness", "60")[0] == 1
    assert status("--max-lateness", "60", "--queue", "default")[0] == 0


@pytest.mark.django_db
def test_a_disabled_or_future_job_is_never_late():
    worker_row("w1")
    job = due_job(waited=600)
    Job.objects.filter(pk=job.pk).update(enabled=False)
    Job.objects.create(name="record", next_run_at=timezone.now() + timedelta(hours=1))
    assert status("--max-lateness", "60")[0] == 0


@pytest.mark.django_db
def test_min_workers_and_hosts():
    worker_row("a", hostname="web-1")
    worker_row("b", hostname="web-2")
    assert status("--min-workers", "2")[0] == 0
    assert status("--min-workers", "3")[0] == 1
    code, out, err = status("--hostname", "web-1", "--min-workers", "2")
    assert code == 1
    assert "Workers on web-1: 1 live" in out
    assert "1 live worker(s) on web-1, fewer than 2" in err
    assert status("--hostname", "web-3")[0] == 1
    # --min-workers 0 checks only the lateness.
    assert status("--hostname", "web-3", "--min-workers", "0")[0] == 0


@pytest.mark.django_db
def test_this_host_counts_the_workers_of_this_host():
    worker_row("elsewhere", hostname="not-" + socket.gethostname())
    assert status("--this-host")[0] == 1
    worker_row("here", hostname=socket.gethostname())
    assert status("--this-host")[0] == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    "args, message",
    [
        (["--max-lateness", "0"], "--max-lateness must be a number of seconds above 0 and at most"),
        (
            ["--max-lateness", "1e300"],
            "--max-lateness must be a number of seconds above 0 and at most",
        ),
        (["--max-heartbeat-age", "soon"], "--max-heartbeat-age must be a number of seconds"),
        (["--min-workers", "-1"], "--min-workers must be 0 or more, not '-1'."),
    ],
)
def test_bad_options_are_refused(args, message):
    with pytest.raises(CommandError, match=message.replace("(", r"\(")):
        status(*args)


@pytest.mark.slow
def test_a_real_worker_is_reported_and_its_stop_noticed(start_worker):
    worker = start_worker("--worker-id", "probe-me")
    wait_for(lambda: Worker.objects.filter(worker_id="probe-me").exists())
    code, out, _ = status()
    assert code == 0 and "probe-me" in out
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.output()
    assert not Worker.objects.exists()
    assert status()[0] == 1
    assert JobState.RUNNING not in Job.objects.values_list("state", flat=True)


# Late and failing recurring jobs (django_jobs.alerts): exit status 3 when otherwise healthy.


def late_monthly(*, waited: float, queue: str = "default") -> Job:
    return Job.objects.create(
        name="monthly",
        schedule="0 3 1 * *",
        queue=queue,
        next_run_at=timezone.now() - timedelta(seconds=waited),
    )


@pytest.mark.django_db
def test_a_late_recurring_job_is_named_with_its_reason_and_exits_3():
    worker_row("w1")
    job = late_monthly(waited=900)
    code, out, err = status("--max-lateness", "3600")
    assert code == 3
    assert "Recurring jobs late or failing: 1." in out
    assert f"ALERT: job monthly #{job.pk}: late: due at " in err
    assert "not started after 15 min (limit 5 min)." in err
    assert "UNHEALTHY" not in err and "OK" not in out


@pytest.mark.django_db
def test_a_failing_recurring_job_exits_3_and_ignore_alerts_exits_0():
    from django_jobs.models import JobRun, RunOutcome

    worker_row("w1")
    job = late_monthly(waited=-3600)  # due in an hour: not late
    for _ in range(3):
        JobRun.objects.create(
            job=job, job_name="monthly", outcome=RunOutcome.FAILED, worker_id="w", lock_token="t"
        )
    code, _, err = status()
    assert code == 3
    assert f"ALERT: job monthly #{job.pk}: failing: its last 3 runs failed." in err
    code, out, err = status("--ignore-alerts")
    assert code == 0 and out.rstrip().endswith("OK")
    assert "ALERT: job monthly" in err  # still listed


@pytest.mark.django_db
def test_unhealthy_keeps_exit_1_with_alerts_and_queues_filter_alerts():
    late_monthly(waited=900, queue="reports")
    code, _, err = status()  # no live worker: unhealthy comes first
    assert code == 1 and "ALERT: job monthly" in err and "UNHEALTHY" in err
    worker_row("w1")
    assert status("--queue", "default")[0] == 0
    assert status("--queue", "reports", "--max-lateness", "3600")[0] == 3
