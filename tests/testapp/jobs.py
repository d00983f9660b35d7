"""Jobs the tests schedule; the worker subprocesses find them through autodiscovery."""

import os
import time

from django.dispatch import receiver

from django_jobs import job
from django_jobs.signals import job_overdue

from .models import Execution


def _record(j):
    Execution.objects.create(job_id=j.pk, attempt=j.attempt, worker_pid=os.getpid())


@job("record", max_attempts=1)
def record(j):
    _record(j)


@job("sleep", max_attempts=3)
def sleep(j):
    """Sleep data['seconds'], then record the execution."""
    deadline = time.monotonic() + float(j.data.get("seconds", 1))
    j.set_progress(0.0, "started")
    while time.monotonic() < deadline:
        time.sleep(0.05)
    _record(j)
    return {"slept": j.data.get("seconds", 1)}


@job("fail-twice", max_attempts=3, backoff=0.01, backoff_jitter=0)
def fail_twice(j):
    _record(j)
    if j.attempt < 3:
        raise RuntimeError(f"attempt {j.attempt} fails on purpose")
    return "third time lucky"


@job("always-fails", max_attempts=2, backoff=0.01, backoff_jitter=0)
def always_fails(j):
    raise ValueError("broken <script>alert(1)</script>")


@job("async-record", max_attempts=1)
async def async_record(j):
    from asgiref.sync import sync_to_async

    await sync_to_async(_record)(j)
    return {"async": True}


@job("limited", concurrency=1, max_attempts=1)
def limited(j):
    time.sleep(float(j.data.get("seconds", 0.2)))
    _record(j)


@job("monthly", schedule="0 3 1 * *", timezone="Europe/Paris")
def monthly(j):
    _record(j)


@job("append-line", max_attempts=3, backoff=0.01, backoff_jitter=0)
def append_line(j):
    """Append "job_id attempt pid" to the file data["path"]; no database, for fault tests."""
    time.sleep(float(j.data.get("seconds", 0)))
    with open(j.data["path"], "a") as out:
        out.write(f"{j.pk} {j.attempt} {os.getpid()}\n")


# The chaos script's job (tests/chaos/chaos.py). Its attempts outlast any run of kills, and its
# retries come quickly, so that a job the script reports as lost was lost by the workers.
CHAOS_WRITE_PATIENCE = 30.0  # seconds a chaos job keeps retrying its own writes


def _chaos_write(write):
    """Run one write of the chaos job, reconnecting through cut connections and busy locks."""
    from django.db import InterfaceError, OperationalError, connection

    deadline = time.monotonic() + CHAOS_WRITE_PATIENCE
    pause = 0.05
    retried = False
    while True:
        try:
            return write(retried)
        except (OperationalError, InterfaceError):
            if time.monotonic() >= deadline:
                raise
            connection.close()
            time.sleep(pause)
            pause = min(pause * 2, 1.0)
            retried = True


@job("chaos", max_attempts=50, backoff=0.5, backoff_max=2.0, backoff_jitter=0)
def chaos(j):
    """Record this execution by the database's clock, work data["seconds"], record its end.

    With data["fail_first"], the first attempt fails after its work, to exercise retries.
    """
    return _chaos_run(j)


# A lock shorter than the chaos workers' (--lock-lifetime 4): the heartbeat must keep it.
@job(
    "chaos-short-lock",
    lock_lifetime=1.0,
    max_attempts=50,
    backoff=0.5,
    backoff_max=2.0,
    backoff_jitter=0,
)
def chaos_short_lock(j):
    """The chaos job with a per-job lock lifetime of 1 s."""
    return _chaos_run(j)


def _chaos_run(j):
    from django.utils import timezone

    from django_jobs.models import DbNow

    from .models import ChaosExecution

    token, pid = j.lock_token or "", os.getpid()

    def start(retried):
        # A write whose answer was lost with its connection may have been committed.
        if retried:
            written = ChaosExecution.objects.filter(job_id=j.pk, lock_token=token, worker_pid=pid)
            if pk := written.values_list("pk", flat=True).first():
                return pk
        return ChaosExecution.objects.create(
            job_id=j.pk,
            attempt=j.attempt,
            lock_token=token,
            worker_pid=pid,
            started_at=DbNow(),
            host_started_at=timezone.now(),
        ).pk

    execution = _chaos_write(start)
    time.sleep(float(j.data.get("seconds", 0.1)))
    _chaos_write(
        lambda retried: ChaosExecution.objects.filter(pk=execution).update(finished_at=DbNow())
    )
    if j.data.get("fail_first") and j.attempt == 1:
        raise RuntimeError("the first attempt of this chaos job fails on purpose")
    return {"pid": os.getpid()}


# Jobs of the trust tests (tests/test_trust.py).


@job("short-lock", lock_lifetime=1, max_attempts=1)
def short_lock(j):
    """Hold a 1-second lock for data['seconds'] on a worker whose own lock lifetime is longer."""
    time.sleep(float(j.data.get("seconds", 3)))
    _record(j)


@job("exits", max_attempts=2, backoff=0.01, backoff_jitter=0)
def exits(j):
    """End the way a script would: sys.exit() (SystemExit) or a KeyboardInterrupt."""
    import sys

    _record(j)
    if j.data.get("how") == "interrupt":
        raise KeyboardInterrupt("stop")
    sys.exit(j.data.get("code", 3))


@job("fail-once-slowly", max_attempts=2, backoff=30, backoff_jitter=0)
def fail_once_slowly(j):
    _record(j)
    if j.attempt == 1:
        raise RuntimeError("the first attempt fails; the retry is due 30 s later")


# job_overdue in worker subprocesses (tests/test_alerts.py): one line per signal received.
@receiver(job_overdue)
def record_overdue(sender, job, alert, reason, **kwargs):
    path = os.environ.get("DJANGO_JOBS_TEST_OVERDUE_FILE")
    if path:
        with open(path, "a") as out:
            out.write(f"{os.getpid()} {job.pk} {job.next_run_at.isoformat()} {reason}\n")


# Timeouts and cancelling a running job (test_timeouts.py)


@job("cooperative-timeout", timeout=1, max_attempts=2, backoff=0.01, backoff_jitter=0)
def cooperative_timeout(j):
    """Work in small steps, looking at stop_requested, as the docs tell sync jobs to."""
    _record(j)
    while True:
        j.check_stop()
        time.sleep(0.02)


@job("ignores-timeout", timeout=0.5, max_attempts=1)
def ignores_timeout(j):
    """Never looks: runs to its end, past its timeout."""
    time.sleep(float(j.data.get("seconds", 1.5)))
    _record(j)
    return "late"


@job("async-timeout", timeout=0.5, max_attempts=1)
async def async_timeout(j):
    import asyncio

    await asyncio.sleep(30)


@job("hard-timeout", timeout=1, max_attempts=1)
def hard_timeout(j):
    """Stops only when killed: under --isolation process it is, at its timeout."""
    _record(j)
    time.sleep(30)


@job("until-cancelled", max_attempts=3)
def until_cancelled(j):
    """Run until cancelled, looking every 20 ms (or, with data["ignore"], never looking)."""
    _record(j)
    deadline = time.monotonic() + float(j.data.get("seconds", 30))
    while time.monotonic() < deadline:
        if not j.data.get("ignore") and j.stop_requested:
            return "stopped"
        time.sleep(0.02)
    return "ran to the end"


@job("fails-in-process", max_attempts=1)
def fails_in_process(j):
    _record(j)
    raise ValueError(f"failed in process {os.getpid()}")


# Cluster-wide limits (tests/test_limits.py): each run appends "label start end" to
# data["path"], in time.monotonic() seconds, which every process on one host shares.


def _interval(j, label, seconds):
    start = time.monotonic()
    time.sleep(seconds)
    with open(j.data["path"], "a") as out:
        out.write(f"{label} {start} {time.monotonic()}\n")


@job("capped", concurrency=3, max_attempts=2, backoff=0.01, backoff_jitter=0)
def capped(j):
    """At most 3 at once in the cluster; with data["hang"], the first attempt hangs."""
    if j.data.get("hang") and j.attempt == 1:
        time.sleep(60)
    _interval(j, j.pk, float(j.data.get("seconds", 0.05)))


@job("rated", rate_limit="20/2s", max_attempts=1)
def rated(j):
    _record(j)


@job("keyed", max_attempts=1)
def keyed(j):
    _interval(j, j.lock_key, float(j.data.get("seconds", 0.1)))
