"""The claim statement under server-side prepared statements (PostgreSQL, psycopg 3).

With OPTIONS["prepare_threshold"] set, psycopg prepares the worker's hot statements, but a
prepared statement is still planned at every execution unless PostgreSQL settles on a generic
plan, and it does so only when the generic plan costs no more than the custom ones. A claim
whose state or LIMIT is a bound parameter has no such plan: the planner cannot prove a partial
index's condition from a parameter. So the claim carries its constants as literals.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from django_jobs import schedule
from django_jobs.models import Job, JobState
from tests.claiming_support import claim_jobs

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(
        connection.vendor != "postgresql"
        or not hasattr(connection.Database, "Pipeline"),  # psycopg 3
        reason="Server-side prepared statements of the hot path: PostgreSQL with psycopg 3.",
    ),
]

# Queue names that a literal in SQL text must quote: a quote, percent signs that psycopg reads
# as placeholders, a backslash.
ODD_QUEUES = ("it's", "50%s", "%%s off", "back\\slash")


@contextlib.contextmanager
def prepared_statements(threshold: int = 0) -> Iterator[None]:
    """Turn on psycopg's prepared statements for this test's connection, as
    OPTIONS["prepare_threshold"] does for a project's."""
    connection.ensure_connection()
    raw = connection.connection
    before = raw.prepare_threshold
    raw.prepare_threshold = threshold
    try:
        yield
    finally:
        raw.prepare_threshold = before
        with connection.cursor() as cursor:
            cursor.execute("DEALLOCATE ALL")
        raw._prepared.clear()  # psycopg's record of what it prepared, now gone


@contextlib.contextmanager
def big_table_statistics() -> Iterator[None]:
    """ANALYZE the job table as it is now, and again at the end once this test's own rows are
    gone: ANALYZE writes the table's row count in place, which the test's rollback does not
    undo, and the plans of the tests after it would be made for a big table."""
    table = Job._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {table}")
    try:
        yield
    finally:
        Job.objects.all().delete()
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {table}")


def claim_plans() -> tuple[int, int]:
    """(generic, custom) plans of the prepared claim statements on this connection."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(sum(generic_plans), 0), coalesce(sum(custom_plans), 0) "
            "FROM pg_prepared_statements WHERE statement LIKE 'WITH claimed AS %%'"
        )
        return cursor.fetchone()


def due_job(queue: str = "default") -> Job:
    return schedule(timedelta(seconds=-1), "record", queue=queue)


def test_a_prepared_claim_settles_on_a_generic_plan():
    # A table whose finished jobs outnumber the due ones, its statistics read: the plans of
    # a few rows would all be sequential scans, generic or not.
    # Finished one-off jobs keep the time they were due.
    past = timezone.now() - timedelta(hours=1)
    Job.objects.bulk_create(
        Job(name="record", state=JobState.SUCCEEDED, next_run_at=past) for _ in range(5000)
    )
    with big_table_statistics(), prepared_statements():
        for _ in range(12):
            due_job()
            (claimed,) = claim_jobs(limit=3)
            assert claimed.state == JobState.RUNNING
        generic, custom = claim_plans()
    # PostgreSQL tries five custom plans, then keeps the generic one if it costs no more.
    assert custom + generic == 12
    assert generic >= 6, (generic, custom)


@pytest.mark.parametrize("prepare", [False, True])
def test_queue_names_that_need_quoting_claim_their_own_jobs_only(prepare):
    jobs = {queue: due_job(queue) for queue in ODD_QUEUES}
    other = due_job("other")
    context = prepared_statements() if prepare else contextlib.nullcontext()
    with context:
        for queue in ODD_QUEUES:
            claimed = claim_jobs(queues=[queue], limit=5)
            assert [job.pk for job in claimed] == [jobs[queue].pk]
            assert claimed[0].queue == queue
        assert claim_jobs(queues=list(ODD_QUEUES), limit=5) == []
    assert Job.objects.get(pk=other.pk).state == JobState.SCHEDULED


def test_the_claim_takes_no_more_than_its_limit_whatever_limit_came_before():
    for _ in range(6):
        due_job()
    with prepared_statements():
        assert len(claim_jobs(limit=1)) == 1
        assert len(claim_jobs(limit=2)) == 2
        assert len(claim_jobs(limit=1)) == 1
        assert len(claim_jobs(limit=5)) == 2
