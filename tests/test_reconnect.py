"""Workers survive dropped database connections: they log, back off, reconnect, carry on.

The connections are killed from the database's side (pg_terminate_backend on PostgreSQL,
KILL CONNECTION on MariaDB/MySQL), as a database restart or a failover would drop them,
without restarting a server that other test runs share.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import DatabaseError, connection

from django_jobs import now
from django_jobs.models import Job, JobState
from tests.conftest import drain_while_killing_connections, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor == "sqlite",
        reason="SQLite is a file in the worker's own process: there is no connection to drop.",
    ),
]


def kill_other_connections() -> int:
    """Drop every connection to the test database but this one; returns how many."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return int(cursor.fetchone()[0])
        cursor.execute(
            "SELECT ID FROM information_schema.PROCESSLIST "
            "WHERE DB = DATABASE() AND ID <> CONNECTION_ID()"
        )
        killed = 0
        for (thread_id,) in cursor.fetchall():
            try:
                cursor.execute(f"KILL CONNECTION {int(thread_id)}")
                killed += 1
            except DatabaseError:
                pass  # it closed by itself meanwhile
        return killed


@pytest.mark.skipif(
    "direct" in settings.DATABASES,
    reason="Through PgBouncer a kill between transactions never reaches the worker: "
    "test_pgbouncer.py drains under kills and checks exactly-once without expecting errors.",
)
def test_a_worker_whose_connections_are_killed_runs_every_job_exactly_once(
    start_worker, tmp_path: Path
):
    worker = drain_while_killing_connections(start_worker, tmp_path, kill_other_connections, 400)
    output = worker.output()
    assert "database error" in output and "reconnecting" in output


@pytest.mark.skipif(connection.vendor != "postgresql", reason="LISTEN is PostgreSQL's.")
def test_the_listener_reconnects_and_an_idle_worker_still_wakes_at_once(start_worker):
    worker = start_worker("--poll-interval", "60", "--worker-id", "relisten")
    listening = "Worker relisten: listening for new jobs"
    wait_for(lambda: worker.output().count(listening) == 1)
    time.sleep(0.5)  # asleep on the connection's socket: a poll is a minute away
    assert kill_other_connections() >= 1
    wait_for(lambda: "database error while waiting for jobs" in worker.output(), timeout=30)
    wait_for(lambda: worker.output().count(listening) == 2, timeout=30)
    time.sleep(0.5)  # let the worker fall asleep again
    job = now("record")
    wait_for(lambda: Job.objects.filter(pk=job.pk, state=JobState.SUCCEEDED).exists(), 20)


@pytest.mark.skipif(
    "direct" in settings.DATABASES,
    reason="Through PgBouncer a kill between transactions never reaches the worker.",
)
def test_a_failed_beat_is_retried_after_the_back_off_not_a_period_later(start_worker):
    # A 6-second lock is extended every 2 s. When a beat fails (its connection dropped), the
    # next try comes after the 0.2 s back-off; it came a whole period later before, so two
    # failures in a row let the lock lapse.
    job = now("sleep", {"seconds": 7})
    worker = start_worker("--worker-id", "beats", "--lock-lifetime", "6", "--max-jobs", "1")
    wait_for(lambda: Job.objects.filter(pk=job.pk, state=JobState.RUNNING).exists())
    time.sleep(2.5)  # a beat on a healthy connection
    assert kill_other_connections() >= 1
    before = Job.objects.get(pk=job.pk).locked_until
    wait_for(lambda: Job.objects.get(pk=job.pk).locked_until != before, timeout=10)
    after = Job.objects.get(pk=job.pk).locked_until
    assert worker.wait(timeout=60) == 0, worker.output()
    assert "error while beating the heartbeat" in worker.output(), worker.output()
    # Both times are the database's: the last extension before the kill, and the first one
    # after the failed beat: one period (2 s) and the back-off apart, not two periods (4 s).
    gap = (after - before).total_seconds()
    assert gap < 3.2, f"the lock was extended again {gap:.2f}s after the last extension"
