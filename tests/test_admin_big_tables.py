"""The admin pages on 100,000 jobs and 500,000 runs take the same queries as on a handful.

Slow (it inserts 600,000 rows), so it runs only with DJANGO_JOBS_BIG_TABLES=1; .ci/run sets
it for the PostgreSQL run. Rows are inserted with INSERT ... SELECT from a seed (plain SQL
that SQLite, PostgreSQL and MariaDB all accept), not one by one.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import Model
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_jobs import stats
from django_jobs.conf import settings
from django_jobs.models import Job, JobRun, JobState, RunOutcome, Worker

from .admin_support import (
    LIST_QUERIES,
    OVERVIEW_STATS_QUERIES,
    RUN_LIST_QUERIES,
    WORKER_LIST_QUERIES,
    assert_page_queries,
    changelist_url,
    job_filter_queries,
    job_page_queries,
    job_url,
    overview_url,
    run_filter_queries,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("DJANGO_JOBS_BIG_TABLES") != "1",
        reason="inserts 600,000 rows; set DJANGO_JOBS_BIG_TABLES=1 to run it",
    ),
]

JOBS, RUNS = 100_000, 500_000
COPIES = 100  # every seed row is there once and copied 99 times
SEED_JOBS, SEED_RUNS = JOBS // COPIES, RUNS // COPIES
# Seconds between seed runs: 5,000 seeds over the last 9.7 hours, 100 copies each. The
# overview's "last hour" is the 12 five-minute intervals up to the one holding now, so it can
# start 55 minutes back: those 55 minutes must hold STATS_LIVE_BELOW runs or more, whatever
# the time of day, for the overview to read the workers' counts (at 17 s, as it was, they
# held 19,400 to 21,200 runs, and the query count depended on the minute the test ran).
RUN_SPACING = 7


def multiply(model: type[Model], copies: int) -> None:
    """Copy every row of the table copies - 1 more times, in one INSERT ... SELECT."""
    quote = connection.ops.quote_name
    columns = ", ".join(
        quote(field.column) for field in model._meta.concrete_fields if not field.primary_key
    )
    digits = " UNION ALL ".join(f"SELECT {d} AS d" for d in range(10))
    table = quote(model._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {table} "
            f"CROSS JOIN ({digits}) tens CROSS JOIN ({digits}) ones "
            f"WHERE tens.d * 10 + ones.d BETWEEN 1 AND {copies - 1}"
        )


def fill() -> None:
    now = timezone.now()
    states = [JobState.SCHEDULED, JobState.SUCCEEDED, JobState.FAILED, JobState.RUNNING]
    names = ["record", "sleep", "fail-twice", "limited"]
    jobs = Job.objects.bulk_create(
        Job(
            name=names[i % 4],
            data={"order": i, "email": f"user{i}@example.com"},
            state=states[i % 4],
            enabled=i % 10 != 0,
            next_run_at=now + timedelta(minutes=i - SEED_JOBS // 2),
            locked_by="web-1:1:aaa" if states[i % 4] == JobState.RUNNING else None,
            last_error="ValueError: boom" if states[i % 4] == JobState.FAILED else "",
        )
        for i in range(SEED_JOBS)
    )
    JobRun.objects.bulk_create(
        JobRun(
            job=jobs[i % SEED_JOBS],
            job_name=jobs[i % SEED_JOBS].name,
            outcome=RunOutcome.FAILED if i % 7 == 0 else RunOutcome.SUCCEEDED,
            worker_id="web-1:1:aaa",
            lock_token="t",
            started_at=now - timedelta(seconds=i * RUN_SPACING),
            finished_at=now - timedelta(seconds=i * RUN_SPACING - 1),
            error="ValueError: boom" if i % 7 == 0 else "",
        )
        for i in range(SEED_RUNS)
    )
    multiply(Job, COPIES)
    multiply(JobRun, COPIES)
    Worker.objects.create(worker_id="web-1:1:aaa", hostname="web-1", pid=1, concurrency=4)


@pytest.mark.django_db
def test_pages_take_the_same_queries_on_big_tables(
    admin_client: Client, django_assert_num_queries: object
) -> None:
    fill()
    assert Job.objects.count() == JOBS and JobRun.objects.count() == RUNS
    recent = JobRun.objects.filter(started_at__gte=timezone.now() - timedelta(minutes=55))
    assert recent.count() >= settings.STATS_LIVE_BELOW  # see RUN_SPACING
    assert stats.refresh("default")  # the overview's counts, as a worker keeps them
    job = Job.objects.order_by("pk").first()
    assert job is not None

    # The filters' probes: one per distinct name or queue, however many rows hold it.
    list_queries = LIST_QUERIES + job_filter_queries()
    run_list_queries = RUN_LIST_QUERIES + run_filter_queries()
    assert list_queries < LIST_QUERIES + 30 and run_list_queries == RUN_LIST_QUERIES + 5
    pages = [
        (changelist_url(), list_queries),
        (changelist_url() + "?state=failed", list_queries),
        (changelist_url() + "?state=due&name=record", list_queries),
        (changelist_url() + "?q=email:user42%40example.com", list_queries),
        (changelist_url() + "?q=email:user42%40example.com&state=failed", list_queries),
        (changelist_url() + "?state=recurring", list_queries),
        (changelist_url() + "?state=disabled", list_queries),
        (changelist_url() + "?o=2", list_queries),  # by name
        (changelist_url() + "?o=-2", list_queries),
        (changelist_url() + "?o=4", list_queries),  # by next run
        (changelist_url() + "?p=50", list_queries),
        (changelist_url() + "?p=1000", list_queries),  # past the first 10,000 rows
        (job_url(job), job_page_queries(job)),
        (overview_url(), OVERVIEW_STATS_QUERIES),
        (overview_url() + "?range=day", OVERVIEW_STATS_QUERIES),
        ("/admin/django_jobs/jobrun/", run_list_queries),
        ("/admin/django_jobs/jobrun/?outcome=failed", run_list_queries),
        ("/admin/django_jobs/jobrun/?q=worker-1", run_list_queries),
        (f"/admin/django_jobs/jobrun/?job__id__exact={job.pk}", run_list_queries),
        ("/admin/django_jobs/worker/", WORKER_LIST_QUERIES),
    ]
    for url, expected in pages:
        with CaptureQueriesContext(connection) as queries:
            assert_page_queries(admin_client, url, expected, django_assert_num_queries)
        for query in queries.captured_queries:
            sql = query["sql"].upper()
            if "COUNT(*)" in sql and "DJANGO_JOBS_WORKER" not in sql:
                # A list's count stops at the cap instead of counting the whole table.
                assert "LIMIT" in sql, (url, sql)

    # The queues page: capped counts per queue and state, each an index range.
    with CaptureQueriesContext(connection) as queries:
        queues = admin_client.get("/admin/django_jobs/job/queues/")
    assert queues.status_code == 200
    assert len(queries.captured_queries) < 40
    for query in queries.captured_queries:
        sql = query["sql"].upper()
        assert "DISTINCT" not in sql, sql
        if "COUNT(*)" in sql:
            assert "LIMIT" in sql, sql
    assert ">10,000+</a>" in queues.content.decode()

    html = admin_client.get(changelist_url()).content.decode()
    assert "10,000+ jobs" in html
    page = admin_client.get(job_url(job))
    assert len(page.context["runs"]) == 20
    overview = admin_client.get(overview_url())
    totals = {cell["key"]: cell["count"] for cell in overview.context["totals"]}
    assert totals["total"] == JOBS and totals["failed"] == JOBS // 4
    assert totals["disabled"] == JOBS // 10
    assert overview.context["chart"].total_runs > 0
    assert overview.context["counted_text"].startswith("Counted by the workers")
