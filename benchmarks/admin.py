#!/usr/bin/env python
"""Server time of every admin page on a big table; prints a table (not a test).

    python benchmarks/admin.py --database-url postgres://postgres@127.0.0.1:5432/bench_admin
    python benchmarks/admin.py --database-url ... --jobs 100000 --runs 200000
    python benchmarks/admin.py --database-url ... --no-load      # time the rows already there

Loads --jobs jobs and --runs runs with INSERT ... SELECT over generate_series (PostgreSQL),
a recursive CTE (SQLite) or seq_1_to_N (MariaDB): 20 names, 5 queues, data with an email and an
order id, a spread of states, recurring rows and failed rows with errors; runs spread over the
last 7 days. Then each page is requested --tries times through Django's test Client, logged
in as a superuser, and timed around the request (time.perf_counter()): median and max.

Before the pages are timed, the overview's numbers that the workers keep (stats.py) are
counted once, as one worker of the cluster does every STATS_EVERY seconds; --live-counts makes
the overview count every job and run itself instead, as it did before those numbers existed.

The database is the benchmark's own: its name must start with "bench" (it is emptied).
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench import analyze, ensure_database  # noqa: E402
from benchmarks.measure import cpu_model  # noqa: E402

NAMES = [
    "send-welcome-email",
    "send-receipt",
    "resize-image",
    "generate-thumbnail",
    "monthly-billing",
    "charge-card",
    "refund-order",
    "sync-inventory",
    "export-report",
    "import-feed",
    "purge-sessions",
    "reindex-search",
    "notify-slack",
    "push-notification",
    "compute-stats",
    "archive-logs",
    "verify-address",
    "fraud-check",
    "update-prices",
    "backup-db",
]
QUEUES = ["default", "emails", "images", "billing", "reports"]
STATES = [
    "scheduled",
    "due",
    "retrying",
    "running",
    "succeeded",
    "failed",
    "recurring",
    "disabled",
    "attention",
]
RUN_SPAN = 7 * 24 * 3600  # seconds: runs are spread over the last 7 days


def configure(url: str) -> None:
    """Django settings: the benchmark's own, plus what the admin needs."""
    os.environ["BENCH_DATABASE_URL"] = url
    import django
    from django.conf import settings

    import benchmarks.settings as base

    values = {name: getattr(base, name) for name in dir(base) if name.isupper()}
    values["INSTALLED_APPS"] = [
        "django.contrib.admin",
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "django.contrib.sessions",
        "django.contrib.messages",
        "django_jobs",
        "benchmarks.benchapp",
    ]
    values.update(
        ALLOWED_HOSTS=["*"],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django.contrib.messages.middleware.MessageMiddleware",
        ],
        ROOT_URLCONF=__name__,
        TEMPLATES=[
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "APP_DIRS": True,
                "OPTIONS": {
                    "context_processors": [
                        "django.template.context_processors.request",
                        "django.contrib.auth.context_processors.auth",
                        "django.contrib.messages.context_processors.messages",
                    ]
                },
            }
        ],
        STATIC_URL="/static/",
    )
    settings.configure(**values)
    django.setup()


def urls() -> list[Any]:
    from django.contrib import admin
    from django.urls import path

    return [path("admin/", admin.site.urls)]


def __getattr__(name: str) -> Any:
    # ROOT_URLCONF is this module: its urlpatterns are built once Django is set up.
    if name == "urlpatterns":
        return urls()
    raise AttributeError(name)


def _array(values: list[str]) -> str:
    return "ARRAY[" + ", ".join(f"'{v}'" for v in values) + "]"


JOB_COLUMNS = [
    "name",
    "data",
    "queue",
    "priority",
    "state",
    "enabled",
    "next_run_at",
    "schedule",
    "timezone",
    "schedule_overridden",
    "unique_key",
    "attempts",
    "max_attempts",
    "failure_count",
    "locked_by",
    "lock_token",
    "locked_until",
    "last_started_at",
    "last_finished_at",
    "last_error",
    "last_error_class",
    "last_traceback",
    "note",
    "progress",
    "progress_message",
    "result",
    "task_backend",
    "created_at",
    "updated_at",
]
RUN_COLUMNS = [
    "job_id",
    "job_name",
    "attempt",
    "outcome",
    "worker_id",
    "lock_token",
    "started_at",
    "finished_at",
    "error",
    "error_class",
    "traceback",
]


def _defaults(model: Any, listed: list[str]) -> tuple[str, str]:
    """(", col, ...", ", value, ...") for the columns the INSERT below does not name.

    Columns added by later migrations get their field's default, so the loader keeps
    working as the model grows.
    """
    columns, values = [], []
    for field in model._meta.concrete_fields:
        if field.primary_key or field.column in listed:
            continue
        default = field.get_default()
        if field.has_default() and callable(field.default):
            value = "now()"
        elif default is None:
            value = "NULL"
        elif isinstance(default, bool):
            value = "true" if default else "false"
        elif isinstance(default, (int, float)):
            value = str(default)
        else:
            value = "'" + str(default).replace("'", "''") + "'"
        columns.append(field.column)
        values.append(value)
    return "".join(f", {c}" for c in columns), "".join(f", {v}" for v in values)


def load_postgresql(cursor: Any, jobs: int, runs: int) -> None:
    from django_jobs.models import Job, JobRun

    names, queues = _array(NAMES), _array(QUEUES)
    job_rest, run_rest = _defaults(Job, JOB_COLUMNS), _defaults(JobRun, RUN_COLUMNS)
    cursor.execute("TRUNCATE django_jobs_jobrun, django_jobs_job RESTART IDENTITY CASCADE")
    # i % 100: 0-64 succeeded, 65-74 failed, 75-94 scheduled (75-84 due, 85-94 later),
    # 95-96 running, 97-99 scheduled far ahead; every 10,000th row is recurring, every 500th
    # is disabled.
    cursor.execute(
        f"""
        INSERT INTO django_jobs_job (
            name, data, queue, priority, state, enabled, next_run_at, schedule, timezone,
            schedule_overridden, unique_key, attempts, max_attempts, failure_count, locked_by,
            lock_token, locked_until, last_started_at, last_finished_at, last_error,
            last_error_class, last_traceback, note, progress, progress_message, result,
            task_backend, created_at, updated_at{job_rest[0]})
        SELECT
            ({names})[i % 20 + 1],
            jsonb_build_object('email', 'user' || i || '@example.com', 'order_id', i,
                               'amount', i % 997),
            ({queues})[i % 5 + 1],
            (i % 3) - 1,
            CASE WHEN i % 10000 = 0 THEN 'scheduled'
                 WHEN i % 100 < 65 THEN 'succeeded'
                 WHEN i % 100 < 75 THEN 'failed'
                 WHEN i % 100 < 95 THEN 'scheduled'
                 WHEN i % 100 < 97 THEN 'running'
                 ELSE 'scheduled' END,
            i % 500 <> 0,
            CASE WHEN i % 10000 = 0 THEN now() + (i % 3600) * interval '1 second'
                 WHEN i % 100 < 75 THEN now() - ({jobs} - i) * interval '1 second'
                 WHEN i % 100 < 85 THEN now() - (i % 600) * interval '1 second'
                 WHEN i % 100 < 95 THEN now() + (i % 86400) * interval '1 second'
                 WHEN i % 100 < 97 THEN now() - interval '5 seconds'
                 ELSE now() + interval '30 days' END,
            CASE WHEN i % 10000 = 0 THEN '*/5 * * * *' ELSE '' END,
            'UTC',
            false,
            CASE WHEN i % 4 = 0 THEN 'order:' || i END,
            CASE WHEN i % 100 < 75 THEN 1 + i % 3 ELSE 0 END,
            3,
            CASE WHEN i % 100 BETWEEN 65 AND 74 THEN 3 ELSE 0 END,
            CASE WHEN i % 100 IN (95, 96) THEN 'host-' || (i % 8) || ':' || (1000 + i % 4) END,
            CASE WHEN i % 100 IN (95, 96) THEN md5(i::text) END,
            CASE WHEN i % 100 IN (95, 96) THEN now() + interval '30 seconds' END,
            CASE WHEN i % 100 < 75 THEN now() - ({jobs} - i) * interval '1 second' END,
            CASE WHEN i % 100 < 75 THEN now() - ({jobs} - i) * interval '1 second'
                                      + (i % 5000) * interval '1 millisecond' END,
            CASE WHEN i % 100 BETWEEN 65 AND 74
                 THEN 'ConnectionError: smtp.example.com:25 refused connection #' || i
                 ELSE '' END,
            CASE WHEN i % 100 BETWEEN 65 AND 74 THEN 'builtins.ConnectionError' ELSE '' END,
            CASE WHEN i % 100 BETWEEN 65 AND 74
                 THEN 'Traceback (most recent call last):' || chr(10) || '  File "jobs.py", '
                      || 'line 12, in send' || chr(10) || 'ConnectionError: refused'
                 ELSE '' END,
            '', NULL, '', NULL, '',
            now() - ({jobs} - i) * interval '1 second',
            now() - ({jobs} - i) * interval '1 second'{job_rest[1]}
        FROM generate_series(1, {jobs}) AS i
        """
    )
    # Run i belongs to job (i % jobs) + 1; the newest runs are the last ones inserted.
    cursor.execute(
        f"""
        INSERT INTO django_jobs_jobrun (
            job_id, job_name, attempt, outcome, worker_id, lock_token, started_at, finished_at,
            error, error_class, traceback{run_rest[0]})
        SELECT
            i % {jobs} + 1,
            ({names})[(i % {jobs} + 1) % 20 + 1],
            1 + i % 3,
            CASE WHEN i % 20 = 0 THEN 'failed' WHEN i % 50 = 1 THEN 'orphaned'
                 ELSE 'succeeded' END,
            'host-' || (i % 8) || ':' || (1000 + i % 4),
            md5(i::text),
            now() - ({runs} - i) * ({RUN_SPAN}.0 / {runs}) * interval '1 second',
            now() - ({runs} - i) * ({RUN_SPAN}.0 / {runs}) * interval '1 second'
                + (i % 5000) * interval '1 millisecond',
            CASE WHEN i % 20 = 0 THEN 'ConnectionError: refused #' || i ELSE '' END,
            CASE WHEN i % 20 = 0 THEN 'builtins.ConnectionError' ELSE '' END,
            ''{run_rest[1]}
        FROM generate_series(1, {runs}) AS i
        """
    )


COPIES = 100  # SQLite and MariaDB: a seed of 1/100 of the rows, copied 99 times


def load_portable(jobs: int, runs: int) -> None:
    """SQLite and MariaDB: a seed through the ORM, then INSERT ... SELECT copies of it.

    The same spread as on PostgreSQL, but each email and order id is there 100 times (one per
    copy), so a search for one lists 100 jobs.
    """
    from datetime import timedelta

    from django.utils import timezone

    from django_jobs.models import Job, JobRun

    JobRun.objects.all().delete()
    Job.objects.all().delete()
    now = timezone.now()
    seed_jobs, seed_runs = jobs // COPIES, runs // COPIES

    def job(i: int) -> Job:
        recurring, band = i % 10000 == 0, i % 100
        state = (
            "scheduled"
            if recurring or (band >= 75 and band not in (95, 96))
            else "succeeded"
            if band < 65
            else "failed"
            if band < 75
            else "running"
        )
        finished = band < 75 and not recurring
        failed = 65 <= band < 75 and not recurring
        return Job(
            name=NAMES[i % 20],
            data={"email": f"user{i}@example.com", "order_id": i, "amount": i % 997},
            queue=QUEUES[i % 5],
            priority=i % 3 - 1,
            state=state,
            enabled=i % 500 != 0,
            next_run_at=now + timedelta(seconds=(i % 3600) if recurring else (i % 86400) - 600),
            schedule="*/5 * * * *" if recurring else "",
            unique_key=f"order:{i}" if i % 4 == 0 else None,
            failure_count=3 if failed else 0,
            locked_by=f"host-{i % 8}:{1000 + i % 4}" if state == "running" else None,
            last_started_at=now - timedelta(seconds=jobs - i) if finished else None,
            last_finished_at=now - timedelta(seconds=jobs - i) if finished else None,
            last_error=f"ConnectionError: smtp.example.com:25 refused connection #{i}"
            if failed
            else "",
        )

    created = Job.objects.bulk_create((job(i) for i in range(1, seed_jobs + 1)), batch_size=2000)
    step = timedelta(seconds=RUN_SPAN / runs)
    JobRun.objects.bulk_create(
        (
            JobRun(
                job=created[i % seed_jobs],
                job_name=created[i % seed_jobs].name,
                attempt=1 + i % 3,
                outcome="failed" if i % 20 == 0 else "orphaned" if i % 50 == 1 else "succeeded",
                worker_id=f"host-{i % 8}:{1000 + i % 4}",
                lock_token="t",
                started_at=now - (seed_runs - i) * COPIES * step,
                finished_at=now - (seed_runs - i) * COPIES * step + timedelta(seconds=1),
                error=f"ConnectionError: refused #{i}" if i % 20 == 0 else "",
            )
            for i in range(1, seed_runs + 1)
        ),
        batch_size=2000,
    )
    for model in (Job, JobRun):
        multiply(model, COPIES)


def multiply(model: Any, copies: int) -> None:
    """Copy every row copies - 1 more times, in one INSERT ... SELECT (as the big-table test).

    Unique keys are made unique again by appending the copy's number.
    """
    from django.db import connection

    quote = connection.ops.quote_name
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(quote(f.column) for f in fields)
    copy = "(tens.d * 10 + ones.d)"
    selected = []
    for f in fields:
        column = quote(f.column)
        if f.name == "unique_key":  # NULL stays NULL
            column = (
                f"CONCAT({column}, '-', {copy})"
                if connection.vendor == "mysql"
                else f"{column} || '-' || {copy}"
            )
        selected.append(column)
    digits = " UNION ALL ".join(f"SELECT {d} AS d" for d in range(10))
    table = quote(model._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({columns}) SELECT {', '.join(selected)} FROM {table} "
            f"CROSS JOIN ({digits}) tens CROSS JOIN ({digits}) ones "
            f"WHERE tens.d * 10 + ones.d BETWEEN 1 AND {copies - 1}"
        )


def load(jobs: int, runs: int) -> float:
    from django.db import connection

    started = time.perf_counter()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            load_postgresql(cursor, jobs, runs)
    else:
        load_portable(jobs, runs)
    analyze()
    return time.perf_counter() - started


def pages(jobs: int) -> list[tuple[str, str]]:
    """(label, url) of every page timed."""
    base = "/admin/django_jobs/"
    job_list = base + "job/"
    run_list = base + "jobrun/"
    some = jobs // 2 + 3  # an id in the middle, a failed one (i % 100 == 65 + ...)
    failed_id = (jobs // 200) * 100 + 66
    page_ids = ",".join(str(jobs - i) for i in range(50))  # the newest 50: the list's page 1
    pages = [
        ("job list", job_list),
        *[(f"state={state}", f"{job_list}?state={state}") for state in STATES],
        ("queue=emails", f"{job_list}?queue=emails"),
        ("name=refund-order", f"{job_list}?name=refund-order"),
        ("name + state=failed", f"{job_list}?name=refund-order&state=failed"),
        ("finished over a day ago", f"{job_list}?finished=1d"),
        ("finished over a week ago + name", f"{job_list}?finished=7d&name=refund-order"),
        ("search email", f"{job_list}?q=email:user{some}@example.com"),
        ("search order id", f"{job_list}?q=order_id:{some}"),
        ("search no match", f"{job_list}?q=email:nobody@example.org"),
        ("search + state=failed", f"{job_list}?q=email:user{failed_id}@example.com&state=failed"),
        ("search id", f"{job_list}?q={some}"),
        ("search unique key", f"{job_list}?q=order:{(some // 4) * 4}"),
        ("search job name", f"{job_list}?q=refund-order"),
        ("sorted by name", f"{job_list}?o=2"),
        ("sorted by name, desc", f"{job_list}?o=-2"),
        ("sorted by next run", f"{job_list}?o=4"),
        ("page 1000", f"{job_list}?p=1000"),
        ("job page", f"{job_list}{failed_id}/change/"),
        ("run list", run_list),
        ("run list, outcome=failed", f"{run_list}?outcome=failed"),
        ("run list, name=refund-order", f"{run_list}?job_name=refund-order"),
        ("run list searched by worker", f"{run_list}?q=host-3:1001"),
        ("runs of one job", f"{run_list}?job__id__exact={failed_id}"),
        ("worker list", base + "worker/"),
        ("overview, last hour", job_list + "overview/"),
        ("overview, last day", job_list + "overview/?range=day"),
        ("queues page", job_list + "queues/"),
        ("recurring jobs page", job_list + "recurring/"),
        # Live updates (live.js): the rows of a page of the list, one job, the overview.
        ("live: 50 rows of the list", f"{job_list}live/?ids={page_ids}"),
        ("live: a job page", f"{job_list}live/?ids={failed_id}"),
        ("live: overview, last hour", job_list + "overview/live/?range=hour"),
    ]
    return pages


def timed(get: Callable[[], Any], tries: int) -> tuple[list[float], Any]:
    times, response = [], None
    for _ in range(tries):
        started = time.perf_counter()
        response = get()
        times.append(time.perf_counter() - started)
    return times, response


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=2_000_000)
    parser.add_argument("--tries", type=int, default=3)
    parser.add_argument("--no-load", action="store_true", help="keep the rows already loaded")
    parser.add_argument("-k", default="", help="only pages whose label contains this")
    parser.add_argument(
        "--live-counts",
        action="store_true",
        help="the overview counts every job and run itself (STATS_LIVE_BELOW at its maximum)",
    )
    args = parser.parse_args()

    ensure_database(args.database_url)
    configure(args.database_url)
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client, override_settings

    call_command("migrate", verbosity=0)
    if not args.no_load:
        print(f"loading {args.jobs:,} jobs and {args.runs:,} runs ...", flush=True)
        print(f"loaded in {load(args.jobs, args.runs):.0f} s", flush=True)
    from django_jobs import stats
    from django_jobs.validation import MAX_STATS_LIVE_BELOW

    if args.live_counts:
        live = {**settings.DJANGO_JOBS, "STATS_LIVE_BELOW": MAX_STATS_LIVE_BELOW}
        override_settings(DJANGO_JOBS=live).enable()  # resets django_jobs.conf
        print("the overview counts every job and run itself (--live-counts)", flush=True)
    else:
        started = time.perf_counter()
        stats.refresh(every=0)
        print(
            "the workers' counts for the overview (stats.refresh(), as one worker does every "
            f"STATS_EVERY s): {time.perf_counter() - started:.1f} s",
            flush=True,
        )
    user = User.objects.filter(username="bench-admin").first() or User.objects.create_superuser(
        "bench-admin", "bench@example.com", "not-secret"
    )
    client = Client()
    client.force_login(user)

    version = getattr(connection, "pg_version", "") if connection.vendor == "postgresql" else ""
    print(f"{connection.vendor} {version}")
    print(f"cpu: {cpu_model()}; load average at start: {os.getloadavg()[0]:.2f}")
    print("| page | median | max | status |\n|---|---|---|---|")
    for label, url in pages(args.jobs):
        if args.k and args.k not in label:
            continue
        client.get(url)  # warm: caches of the process, the database's buffers
        times, response = timed(functools.partial(client.get, url), args.tries)
        status = response.status_code
        if status == 302:
            status = f"302 → {response['Location']}"
        print(
            f"| {label} | {statistics.median(times) * 1000:,.0f} ms "
            f"| {max(times) * 1000:,.0f} ms | {status} |",
            flush=True,
        )
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
