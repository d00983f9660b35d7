"""Waking workers: NOTIFY after commit (PostgreSQL), and sleeping exactly until the next job."""

from __future__ import annotations

import select
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.db import connection, connections, transaction
from django.test import override_settings
from django.utils import timezone

from django_jobs import notify, now, schedule, schedule_many
from django_jobs.models import Job, JobState
from django_jobs.notify import CHANNEL, ClaimListener
from tests.conftest import wait_for

postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="LISTEN/NOTIFY is PostgreSQL's; workers on other databases poll.",
)


# runtests.sh --db pgbouncer: the test database is reached through PgBouncer (transaction
# pooling), where a LISTEN is not kept; "direct" reaches PostgreSQL itself, to listen on.
POOLED = "direct" in settings.DATABASES
LISTEN_ALIAS = "direct" if POOLED else "default"


@pytest.fixture
def listening() -> Any:
    """A connection of the test's own that LISTENs like a worker does; yields a reader."""
    import psycopg

    params = dict(connections[LISTEN_ALIAS].get_connection_params())
    for key in ("cursor_factory", "context", "prepare_threshold"):
        params.pop(key, None)
    conn = psycopg.connect(**params, autocommit=True)
    conn.execute(f"LISTEN {CHANNEL}")

    def received(timeout: float = 2.0, expect: int = 1) -> list[str]:
        """The payloads that arrive; waits for `expect` of them, at most `timeout` seconds."""
        return [n.payload for n in conn.notifies(timeout=timeout, stop_after=expect)]

    yield received
    conn.close()


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_a_job_due_now_notifies_after_its_transaction_commits(listening):
    with transaction.atomic():
        now("record")
        # Nothing is sent before the commit: a woken worker would find nothing to claim.
        assert listening(timeout=0.3) == []
    assert listening() == ["default"]


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_job_notifies_nobody(listening):
    with pytest.raises(RuntimeError), transaction.atomic():
        now("record")
        raise RuntimeError("rolled back")
    assert listening(timeout=0.3) == []


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_only_jobs_due_within_a_poll_interval_notify(listening):
    schedule("in 1 hour", "record")
    schedule(timedelta(milliseconds=300), "record", queue="soon")
    # The far job sent nothing: the first notification is the near one's.
    assert listening() == ["soon"]


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_schedule_many_notifies_once_per_queue(listening):
    schedule_many([("now", "record", {}), ("now", "record", {}), ("in 1 hour", "record", {})])
    schedule_many([("in 1 hour", "record", {})])  # nothing due soon: nothing sent
    now("record", queue="last")
    assert listening(expect=2) == ["default", "last"]


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_run_now_and_retry_from_the_admin_notify(listening):
    job = schedule("in 1 hour", "record", queue="admin")
    job.run_now()
    assert listening() == ["admin"]
    Job.objects.filter(pk=job.pk).update(state=JobState.FAILED)
    job.refresh_from_db()
    job.retry()
    assert listening() == ["admin"]


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_notify_false_turns_notifications_off(listening):
    with override_settings(DJANGO_JOBS={"NOTIFY": False}):
        now("record")
    assert listening(timeout=0.3) == []


@postgresql_only
@pytest.mark.skipif(POOLED, reason="Through PgBouncer the claim connection keeps no LISTEN.")
@pytest.mark.django_db(transaction=True)
def test_the_claim_listener_hears_only_its_queues_during_queries():
    # The claim loop's own connection listens; a notification that arrives while it runs a
    # query (here: its own NOTIFY, which PostgreSQL delivers to the sender too) is kept.
    listener = ClaimListener("default", queues=["emails"])
    try:
        assert listener.listen() is True
        assert listener.listen() is False  # same connection: already listening
        now("record", queue="reports")
        assert listener.heard() is False
        now("record", queue="emails")
        assert listener.heard() is True
        assert listener.heard() is False  # each notification wakes once
    finally:
        listener.unlisten()


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_the_claim_listener_wakes_from_its_socket_while_idle():
    import psycopg

    listener = ClaimListener("default", queues=["emails"])
    params = dict(connection.get_connection_params())
    for key in ("cursor_factory", "context", "prepare_threshold"):
        params.pop(key, None)
    sender = psycopg.connect(**params, autocommit=True)
    try:
        listener.listen()
        assert select.select([listener.fileno()], [], [], 0.2)[0] == []
        sender.execute("SELECT pg_notify(%s, 'reports')", [CHANNEL])
        assert select.select([listener.fileno()], [], [], 5)[0]
        assert listener.heard() is False  # read, and not for us
        sender.execute("SELECT pg_notify(%s, '*')", [CHANNEL])
        assert select.select([listener.fileno()], [], [], 5)[0]
        assert listener.heard() is True
    finally:
        sender.close()
        listener.unlisten()


@postgresql_only
@pytest.mark.slow
def test_an_idle_worker_starts_a_new_job_at_once(start_worker):
    # A minute between polls: only the notification can start the job in time.
    worker = start_worker("--poll-interval", "60", "--worker-id", "listener")
    wait_for(lambda: "Worker listener: listening for new jobs" in worker.output())
    job = now("record")
    wait_for(lambda: Job.objects.filter(pk=job.pk, state=JobState.SUCCEEDED).exists(), 20)


@pytest.mark.slow
def test_a_worker_wakes_at_the_due_time_not_at_the_next_poll(start_worker):
    due_at = timezone.now() + timedelta(seconds=2)
    job = schedule(due_at, "record")
    start_worker("--poll-interval", "60", "--worker-id", "sleeper")
    wait_for(lambda: Job.objects.filter(pk=job.pk, state=JobState.SUCCEEDED).exists(), 30)
    job.refresh_from_db()
    assert job.last_started_at >= due_at  # never early


@pytest.mark.slow
def test_burst_waits_for_a_job_coming_due_within_the_poll_interval(start_worker):
    job = schedule(timedelta(milliseconds=400), "record")
    worker = start_worker("--burst", "--poll-interval", "2")
    assert worker.wait(60) == 0, worker.output()
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_a_task_enqueued_through_the_backend_wakes_idle_workers(listening):
    from tests.testapp import tasks

    # The tasks backend creates its rows through the same function as schedule() and now(),
    # so it wakes the workers of the task's queue as they do (it did not, before).
    tasks.add.enqueue(1, 2)
    assert listening() == ["default"]


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_a_new_schedule_due_soon_wakes_idle_workers(listening):
    from django_jobs.models import RECURRING_KEY_PREFIX

    job = Job.objects.create(
        name="monthly",
        schedule="0 3 1 * *",
        timezone="UTC",
        next_run_at=timezone.now() + timedelta(days=20),
        unique_key=RECURRING_KEY_PREFIX + "monthly",
    )
    listening(timeout=0.3)
    job.change_schedule("every 1 second", "UTC")  # its first run is within a poll interval
    assert listening() == ["default"]


@pytest.mark.django_db
def test_listen_database_false_polls_and_says_so_at_start(caplog):
    with override_settings(DJANGO_JOBS={"LISTEN_DATABASE": False}):
        assert notify.supported("default") is False
    if connection.vendor == "postgresql":
        assert "Not listening for new jobs: DJANGO_JOBS['LISTEN_DATABASE'] is False" in caplog.text
        with override_settings(DJANGO_JOBS={"LISTEN_DATABASE": None}):
            assert notify.supported("default") is True
    else:
        assert caplog.text == ""  # other databases always poll: nothing to explain


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (3, "DJANGO_JOBS['LISTEN_DATABASE'] is 3."),
        (True, "DJANGO_JOBS['LISTEN_DATABASE'] is True."),
        ("nope", "DJANGO_JOBS['LISTEN_DATABASE'] is 'nope', which is not in DATABASES."),
    ],
)
def test_the_check_refuses_a_listen_database_that_is_not_an_alias(value, message):
    with override_settings(DJANGO_JOBS={"LISTEN_DATABASE": value}):
        errors = notify.check_listen_database()
    assert [(e.id, e.msg) for e in errors] == [("django_jobs.E008", message)]
    assert errors[0].hint


def test_the_check_accepts_none_false_and_a_postgresql_alias():
    for value in (None, False):
        with override_settings(DJANGO_JOBS={"LISTEN_DATABASE": value}):
            assert notify.check_listen_database() == []
    with override_settings(DJANGO_JOBS={"LISTEN_DATABASE": "default"}):
        errors = notify.check_listen_database()
    if connection.vendor == "postgresql":
        assert errors == []
    else:
        assert [e.msg for e in errors] == [
            f"DJANGO_JOBS['LISTEN_DATABASE'] is 'default', a {connection.vendor} database, "
            "and only PostgreSQL can LISTEN."
        ]
