"""Workers survive dropped database connections: they log, back off, reconnect, carry on.

The connections are killed from the database's side (pg_terminate_backend on PostgreSQL,
KILL CONNECTION on MariaDB/MySQL), as a database restart or a failover would drop them,
without restarting a server that other test runs share.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
from django.db import DatabaseError, connection

from django_jobs import now, schedule_many
from django_jobs.models import Job, JobRun, JobState, RunOutcome
from tests.conftest import wait_for

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


def test_a_worker_whose_connections_are_killed_runs_every_job_exactly_once(
    start_worker, tmp_path: Path
):
    lines = tmp_path / "executions.txt"
    jobs = schedule_many(
        ("now", "append-line", {"path": str(lines), "seconds": 0.005}) for _ in range(400)
    )
    worker = start_worker("--concurrency", "4", "--worker-id", "survivor", "--lock-lifetime", "3")

    def done() -> bool:
        return Job.objects.filter(state=JobState.SUCCEEDED).count() == len(jobs)

    kills = 0
    deadline = time.monotonic() + 120
    while not done() and time.monotonic() < deadline:
        if kills < 6 and lines.exists() and kill_other_connections():
            kills += 1
        time.sleep(0.25)
    wait_for(done, timeout=120)
    assert kills >= 2, "the drain ended before the connections could be killed"

    # Every job ran once: the executions are written to a file, outside the database.
    counts = Counter(int(line.split()[0]) for line in lines.read_text().splitlines())
    assert set(counts) == {job.pk for job in jobs}
    assert set(counts.values()) == {1}, [pk for pk, n in counts.items() if n > 1]
    # Each has one successful run; nothing is left running (a claim whose answer was lost
    # comes back as an orphaned run once its lock expires, then runs).
    succeeded = Counter(
        JobRun.objects.filter(outcome=RunOutcome.SUCCEEDED).values_list("job_id", flat=True)
    )
    assert set(succeeded.values()) == {1} and len(succeeded) == len(jobs)
    assert not JobRun.objects.filter(outcome=RunOutcome.RUNNING).exists()

    output = worker.output()
    assert "database error" in output and "reconnecting" in output
    assert worker.proc.poll() is None  # it carried on


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
