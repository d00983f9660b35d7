"""The overview's numbers kept by the workers (stats.py): the job counts' snapshot taken in
turns by one worker of the cluster, the runs per minute, and the overview reading them."""

from __future__ import annotations

import itertools
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core.checks import Error
from django.db import connections
from django.db.models import Count
from django.db.models.functions import Trunc
from django.test import Client

from django_jobs import stats
from django_jobs.checks import check_settings
from django_jobs.claiming.sql import database_now
from django_jobs.models import Job, JobCount, JobRun, JobState, RunCount, RunOutcome, StatsMark
from django_jobs.retention import purge

from .admin_support import (
    OVERVIEW_QUERIES,
    OVERVIEW_STATS_QUERIES,
    assert_page_queries,
    jobs_in_every_state,
    make_job,
    make_run,
    overview_url,
)
from .conftest import wait_for


def live_groups() -> list[tuple[Any, ...]]:
    return sorted(
        (g["name"], g["state"], g["enabled"], g["is_due"], g["is_recurring"], g["n"])
        for g in stats.job_groups("default")
    )


def snapshot() -> list[tuple[Any, ...]]:
    return sorted(
        JobCount.objects.values_list("name", "state", "enabled", "is_due", "is_recurring", "count")
    )


def minutes_in_buckets(before: datetime) -> dict[tuple[datetime, str], int]:
    return {
        (row.minute, row.outcome): row.count
        for row in RunCount.objects.filter(minute__lt=before)
        if row.count
    }


def minutes_counted_live(before: datetime) -> dict[tuple[datetime, str], int]:
    since = database_now("default") - stats.RUNS_FIRST
    grouped = (
        JobRun.objects.filter(started_at__gte=stats.floor_minute(since), started_at__lt=before)
        .order_by()
        .values("outcome", at=Trunc("started_at", "minute", tzinfo=UTC))
        .annotate(n=Count("pk"))
    )
    return {(row["at"], row["outcome"]): row["n"] for row in grouped}


def totals(response: Any) -> dict[str, int]:
    return {cell["key"]: cell["count"] for cell in response.context["totals"]}


# The workers' side


@pytest.mark.django_db
def test_a_refresh_counts_the_jobs_as_the_live_count_does() -> None:
    jobs_in_every_state()
    make_job("sleep", state=JobState.FAILED, next_run_at=None, enabled=False)
    assert stats.refresh("default", every=30)
    assert snapshot() == live_groups()
    mark = StatsMark.objects.get(key=stats.MARK)
    assert mark.counted_at is not None and mark.taken_at is not None
    assert mark.counted_at <= mark.taken_at + timedelta(seconds=1)

    make_job("sleep")
    assert not stats.refresh("default", every=30)  # the turn is taken for 30 s
    assert snapshot() != live_groups()
    assert stats.refresh("default", every=0)  # a period of 0 s has passed
    assert snapshot() == live_groups()


@pytest.mark.django_db(transaction=True)
def test_among_workers_that_refresh_at_once_one_takes_the_turn() -> None:
    jobs_in_every_state()
    stats.refresh("default", every=0)  # the mark row exists; its turn was just taken
    StatsMark.objects.update(taken_at=database_now("default") - timedelta(minutes=5))
    start = threading.Barrier(4)
    won: list[bool] = []

    def worker() -> None:
        try:
            start.wait()
            won.append(stats.refresh("default", every=60))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(won) == [False, False, False, True]
    assert snapshot() == live_groups()


@pytest.mark.django_db(transaction=True)
def test_the_first_refresh_ever_creates_the_mark_once() -> None:
    start = threading.Barrier(3)
    won: list[bool] = []

    def worker() -> None:
        try:
            start.wait()
            won.append(stats.take_turn("default", 60))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(won) == [False, False, True]
    assert StatsMark.objects.count() == 1


def test_two_worker_processes_keep_the_counts_once_a_period(start_worker, worker_env) -> None:
    jobs_in_every_state()
    worker_env["DJANGO_JOBS_STATS_EVERY"] = "1"
    workers = [start_worker("--worker-id", f"w{i}", "--queue", "nothing") for i in range(2)]
    wait_for(lambda: StatsMark.objects.filter(counted_at__isnull=False).exists(), timeout=30)
    assert snapshot() == live_groups()
    # Over 4 s, each count is at least a period after the one before: one worker per period.
    seen = []
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        counted_at = StatsMark.objects.get().counted_at
        if not seen or seen[-1] != counted_at:
            seen.append(counted_at)
        time.sleep(0.02)
    assert len(seen) >= 3, seen
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(seen)]
    assert min(gaps) >= 0.95, gaps  # taken by the database's clock, at most once a second
    make_job("sleep", next_run_at=datetime(2100, 1, 1, tzinfo=UTC))
    wait_for(lambda: snapshot() == live_groups(), timeout=10)
    for worker in workers:
        assert "Counting for the overview failed" not in worker.output()
        assert worker.proc.poll() is None  # still running


@pytest.mark.django_db
def test_the_minutes_match_a_live_count_of_the_runs() -> None:
    job = make_job()
    now = database_now("default")
    outcomes = [RunOutcome.SUCCEEDED, RunOutcome.FAILED, RunOutcome.ORPHANED, RunOutcome.CANCELLED]
    for i in range(120):
        make_run(job, outcomes[i % 4], started_at=now - timedelta(minutes=i % 90, seconds=i % 50))
    running = make_run(job, RunOutcome.RUNNING, started_at=now - timedelta(minutes=30))
    make_run(job, started_at=now - timedelta(days=1, minutes=5))  # before the day: not counted
    assert stats.refresh("default", every=0)
    through = StatsMark.objects.get().runs_through
    assert through == stats.floor_minute(now - stats.RUNS_SETTLE)
    assert minutes_in_buckets(through) == minutes_counted_live(through)
    assert (
        sum(minutes_in_buckets(through).values())
        == JobRun.objects.filter(
            started_at__gte=now - timedelta(days=1), started_at__lt=through
        ).count()
    )

    # The running run fails: the next refresh counts its minute again, under its outcome.
    JobRun.objects.filter(pk=running.pk).update(outcome=RunOutcome.FAILED)
    make_run(job, RunOutcome.FAILED, started_at=now - timedelta(seconds=10))
    assert stats.refresh("default", every=0)
    through = StatsMark.objects.get().runs_through
    assert minutes_in_buckets(through) == minutes_counted_live(through)
    assert not RunCount.objects.filter(outcome=RunOutcome.RUNNING).exists()


@pytest.mark.django_db
def test_minutes_go_after_two_days_or_with_the_retention(settings: Any) -> None:
    now = database_now("default")
    # Minutes from before the day the refreshes fold again (which they would count anew).
    for days in (1, 3):
        RunCount.objects.create(
            minute=stats.floor_minute(now - timedelta(days=days, hours=2)),
            outcome=RunOutcome.SUCCEEDED,
            count=5,
        )
    stats.refresh("default", every=0)
    assert RunCount.objects.count() == 1  # three days old: past the chart's day and a spare

    settings.DJANGO_JOBS = {"RETENTION": "1h"}
    stats.refresh("default", every=0)
    assert RunCount.objects.count() == 0  # their runs went after an hour: so do they

    RunCount.objects.create(
        minute=stats.floor_minute(now - timedelta(hours=3)), outcome="succeeded", count=1
    )
    RunCount.objects.create(
        minute=stats.floor_minute(now - timedelta(minutes=10)), outcome="succeeded", count=1
    )
    purge(timedelta(hours=1))  # purgejobs: the runs' minutes go with them
    assert list(RunCount.objects.values_list("count", flat=True)) == [1]


def test_the_settings_are_bounded(settings: Any) -> None:
    for bad in ({"STATS_EVERY": 0}, {"STATS_EVERY": 7200}, {"STATS_LIVE_BELOW": -1}):
        settings.DJANGO_JOBS = bad
        errors = [e for e in check_settings() if isinstance(e, Error)]
        assert [e.id for e in errors] == ["django_jobs.E003"], bad
        key, value = next(iter(bad.items()))
        assert f"DJANGO_JOBS[{key!r}] is {value}." == errors[0].msg
    settings.DJANGO_JOBS = {"STATS_LIVE_BELOW": 1.5}
    assert "whole number" in check_settings()[0].hint
    settings.DJANGO_JOBS = {"STATS_EVERY": 1, "STATS_LIVE_BELOW": 0}
    assert check_settings() == []


# The overview's side


@pytest.mark.django_db
def test_a_small_table_is_counted_at_every_request(admin_client: Client) -> None:
    jobs_in_every_state()
    stats.refresh("default", every=0)
    make_job("sleep")  # after the workers' count
    response = admin_client.get(overview_url())
    assert totals(response)["total"] == Job.objects.count()
    assert response.context["counted_text"] == ""


@pytest.mark.django_db
def test_a_big_table_shows_the_workers_count_and_its_age(
    admin_client: Client, settings: Any, django_assert_num_queries: Any
) -> None:
    settings.DJANGO_JOBS = {"STATS_LIVE_BELOW": 5, "STATS_EVERY": 30}
    jobs_in_every_state()
    job = make_job("sleep")
    now = database_now("default")
    for minutes in (50, 40, 3):  # two folded into minutes, one counted live
        make_run(job, RunOutcome.FAILED, started_at=now - timedelta(minutes=minutes))
    for minutes in range(5):
        make_run(job, started_at=now - timedelta(minutes=10 + minutes))
    stats.refresh("default")
    StatsMark.objects.update(runs_through=stats.floor_minute(now - timedelta(minutes=5)))
    counted = Job.objects.count()
    make_job("sleep")  # not counted until the next refresh
    response = admin_client.get(overview_url())
    assert totals(response)["total"] == counted
    text = response.context["counted_text"]
    assert text.startswith("Counted by the workers ") and "every 30 s" in text
    assert "Counted by the workers" in response.content.decode()
    chart = response.context["chart"]
    assert (chart.total_runs, chart.total_failures) == (8, 3)
    day = admin_client.get(overview_url() + "?range=day").context["chart"]  # minutes by hour
    assert (day.total_runs, day.total_failures) == (8, 3)
    assert_page_queries(
        admin_client, overview_url(), OVERVIEW_STATS_QUERIES, django_assert_num_queries
    )
    # The live updates read the same.
    live = admin_client.get(overview_url().replace("overview/", "overview/live/"))
    assert "Counted by the workers" in live.json()["sections"]["djj-counts-body"]


@pytest.mark.django_db
def test_without_a_workers_count_a_big_table_is_counted_live_and_says_so(
    admin_client: Client, settings: Any, django_assert_num_queries: Any
) -> None:
    settings.DJANGO_JOBS = {"STATS_LIVE_BELOW": 5, "STATS_EVERY": 10}
    jobs_in_every_state()
    response = admin_client.get(overview_url())
    assert totals(response)["total"] == Job.objects.count()
    assert "no worker has counted the jobs yet" in response.context["counted_text"]

    stats.refresh("default")
    # No worker counted for 2 periods and a minute: the page counts itself, and says how old
    # the workers' count is.
    StatsMark.objects.update(counted_at=database_now("default") - timedelta(seconds=81))
    make_job("sleep")
    response = admin_client.get(overview_url())
    assert totals(response)["total"] == Job.objects.count()
    assert "the workers last counted the jobs 1 min 21 s ago" in response.context["counted_text"]

    StatsMark.objects.update(counted_at=database_now("default") - timedelta(seconds=70))
    response = admin_client.get(overview_url())
    assert totals(response)["total"] == Job.objects.count() - 1  # 70 s: still the workers'


@pytest.mark.django_db
def test_the_chart_reads_live_where_no_worker_counted(admin_client: Client, settings: Any) -> None:
    settings.DJANGO_JOBS = {"STATS_LIVE_BELOW": 2}
    job = make_job()
    now = database_now("default")
    for minutes in (50, 20, 2):
        make_run(job, RunOutcome.FAILED, started_at=now - timedelta(minutes=minutes))
    chart = admin_client.get(overview_url()).context["chart"]  # no mark at all
    assert (chart.total_runs, chart.total_failures) == (3, 3)
    stats.refresh("default")
    StatsMark.objects.update(runs_through=stats.floor_minute(now - timedelta(hours=3)))
    chart = admin_client.get(overview_url()).context["chart"]  # counted before the range
    assert (chart.total_runs, chart.total_failures) == (3, 3)


@pytest.mark.django_db
def test_the_small_overview_keeps_its_queries(
    admin_client: Client, django_assert_num_queries: Any
) -> None:
    jobs_in_every_state()
    assert_page_queries(admin_client, overview_url(), OVERVIEW_QUERIES, django_assert_num_queries)
