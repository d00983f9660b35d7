"""Through PgBouncer in transaction pooling mode (runtests.sh --db pgbouncer).

The test database is reached through PgBouncer on 127.0.0.1:6432; the "direct" alias reaches
PostgreSQL itself, for LISTEN only (DJANGO_JOBS["LISTEN_DATABASE"] = "direct"). The claiming,
exactly-once, graceful-stop and reconnection tests run through it as they are; these check
that the connection really goes through the pooler, and both ways a worker learns of new jobs.
"""

from __future__ import annotations

import select
import socket
import time
from typing import Any

import pytest
from django.conf import settings
from django.db import DatabaseError, connection, connections

from django_jobs import notify, now
from django_jobs.models import Job, JobState
from django_jobs.notify import CHANNEL, ClaimListener
from tests.conftest import drain_while_killing_connections, wait_for

pytestmark = pytest.mark.skipif(
    "direct" not in settings.DATABASES,
    reason="Run through PgBouncer with ./runtests.sh --db pgbouncer.",
)

POLLING_LINE = "Not listening for new jobs: DJANGO_JOBS['LISTEN_DATABASE'] is False"


def admin_console(command: str) -> list[dict[str, Any]]:
    """Rows of a PgBouncer admin command (SHOW ...), from its console on the pooler's port."""
    import psycopg
    from psycopg.rows import dict_row

    params = connection.settings_dict
    with psycopg.connect(
        host=params["HOST"],
        port=params["PORT"],
        user=params["USER"],
        dbname="pgbouncer",
        autocommit=True,
        row_factory=dict_row,
    ) as console:
        return console.execute(command).fetchall()


def kill_server_connections() -> int:
    """Drop every PostgreSQL session on the test database (PgBouncer's and the LISTENs)."""
    import psycopg

    with psycopg.connect(**connections["direct"].get_connection_params(), autocommit=True) as c:
        row = c.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.django_db
def test_the_test_database_is_reached_through_pgbouncer_in_transaction_mode():
    config = {row["key"]: row["value"] for row in admin_console("SHOW CONFIG")}
    assert config["pool_mode"] == "transaction"
    assert str(connection.settings_dict["PORT"]) == config["listen_port"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT inet_server_port(), current_database()")
        server_port, database = cursor.fetchone()
    # PostgreSQL's own port answers, while this client talks to the pooler's.
    assert server_port == int(connections["direct"].settings_dict["PORT"])
    assert server_port != int(connection.settings_dict["PORT"])
    clients = admin_console("SHOW CLIENTS")
    assert any(client["database"] == database for client in clients), clients


@pytest.mark.django_db(transaction=True, databases=["default", "direct"])
def test_a_listener_on_the_direct_alias_hears_a_notify_sent_through_the_pooler():
    listener = ClaimListener("default", queues=["emails"])
    assert (listener.dedicated, listener.listen_using) == (True, "direct")
    assert notify.listen_alias("default") == "direct"
    try:
        assert listener.listen() is True
        assert listener.listen() is False  # its own connection: already listening
        assert select.select([listener.fileno()], [], [], 0.2)[0] == []
        notify.send("default", ["reports"])  # through PgBouncer: NOTIFY needs no session
        assert select.select([listener.fileno()], [], [], 5)[0]
        assert listener.heard() is False  # read, and not for us
        notify.send("default", ["emails"])
        assert select.select([listener.fileno()], [], [], 5)[0]
        assert listener.heard() is True
    finally:
        listener.unlisten()
    assert listener.listen() is True  # a new connection, listening again
    listener.unlisten()


@pytest.mark.django_db(transaction=True)
def test_while_the_direct_connection_is_out_of_reach_the_listener_polls_then_retries(
    monkeypatch,
):
    monkeypatch.setattr(notify, "LISTEN_RETRY_MIN", 0.3)
    listener = ClaimListener("default")
    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with monkeypatch.context() as m:
        m.setitem(connections["direct"].settings_dict, "PORT", closed_port)
        with pytest.raises(DatabaseError):
            listener.listen()
        # Not tried again at once (the claim loop would spin): it sleeps its whole timeout.
        assert listener.listen() is False
        assert listener.heard() is False
        assert select.select([listener.fileno()], [], [], 0.1)[0] == []
    time.sleep(0.35)
    try:
        assert listener.listen() is True
        notify.send("default", ["*"])
        assert select.select([listener.fileno()], [], [], 5)[0]
        assert listener.heard() is True
    finally:
        listener.unlisten()


@pytest.mark.django_db(transaction=True)
def test_a_listen_on_the_pooled_connection_is_not_kept():
    # Why LISTEN_DATABASE exists: the LISTEN ends with its transaction's server connection.
    import psycopg

    params = dict(connection.get_connection_params())
    with (
        psycopg.connect(**params, autocommit=True) as pooled,
        psycopg.connect(**params, autocommit=True) as sender,
    ):
        pooled.execute(f"LISTEN {CHANNEL}")
        sender.execute("SELECT pg_notify(%s, '*')", [CHANNEL])
        assert select.select([pooled.pgconn.socket], [], [], 1)[0] == []


@pytest.mark.slow
def test_without_a_direct_connection_a_worker_polls_and_says_so(start_worker, worker_env):
    worker_env["DJANGO_JOBS_LISTEN_DATABASE"] = "false"
    worker = start_worker("--poll-interval", "0.5", "--worker-id", "poller")
    wait_for(lambda: POLLING_LINE in worker.output())
    job = now("record")
    wait_for(lambda: Job.objects.filter(pk=job.pk, state=JobState.SUCCEEDED).exists(), 20)
    assert "Worker poller: listening for new jobs" not in worker.output()


@pytest.mark.slow
def test_with_the_direct_alias_an_idle_worker_starts_a_new_job_at_once(start_worker):
    # A minute between polls: only the notification, heard on "direct", starts the job.
    worker = start_worker("--poll-interval", "60", "--worker-id", "direct")
    wait_for(lambda: "Worker direct: listening for new jobs" in worker.output())
    assert "Listening for new jobs on the database 'direct'" in worker.output()
    job = now("record")
    wait_for(lambda: Job.objects.filter(pk=job.pk, state=JobState.SUCCEEDED).exists(), 20)


@pytest.mark.slow
def test_jobs_run_exactly_once_while_the_server_connections_are_killed(start_worker, tmp_path):
    # PgBouncer hides most of these kills from its clients (it drops a dead idle server
    # connection and opens another); what must hold is that every job runs once.
    drain_while_killing_connections(start_worker, tmp_path, kill_server_connections, 300)


@pytest.mark.slow
def test_the_direct_listener_reconnects_and_an_idle_worker_still_wakes_at_once(start_worker):
    worker = start_worker("--poll-interval", "60", "--worker-id", "relisten")
    listening = "Worker relisten: listening for new jobs"
    wait_for(lambda: worker.output().count(listening) == 1)
    time.sleep(0.5)  # asleep on the direct connection's socket: a poll is a minute away
    assert kill_server_connections() >= 1
    wait_for(lambda: worker.output().count(listening) == 2, timeout=30)
    time.sleep(0.5)  # let the worker fall asleep again
    job = now("record")
    wait_for(lambda: Job.objects.filter(pk=job.pk, state=JobState.SUCCEEDED).exists(), 20)
