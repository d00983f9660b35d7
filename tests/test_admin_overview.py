"""The overview: counts per name by aggregate queries, the runs chart, live workers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_jobs.admin.overview import build_chart, counts_by_name, nice_ceiling, run_buckets
from django_jobs.models import JobState, RunOutcome, Worker

from .admin_support import (
    OVERVIEW_QUERIES,
    PERMISSION_QUERIES,
    XSS,
    XSS_ESCAPED,
    assert_page_queries,
    client_for,
    jobs_in_every_state,
    make_job,
    make_run,
    make_user,
    overview_url,
    past,
)

pytestmark = pytest.mark.django_db


def test_counts_per_name_and_state(admin_client: Client) -> None:
    jobs_in_every_state()
    make_job("sleep", state=JobState.FAILED, next_run_at=None)
    make_job("sleep", state=JobState.FAILED, next_run_at=None, enabled=False)
    rows, totals, counted = counts_by_name("default")
    assert counted.live and not counted.stale  # a small table: counted by the request
    by_name = {row["name"]: row for row in rows}
    assert by_name["record"] == {
        "name": "record",
        "total": 6,
        "scheduled": 2,  # the future one and the disabled one
        "due": 1,
        "running": 1,
        "succeeded": 1,
        "failed": 1,
        "recurring": 0,
        "disabled": 1,
    }
    assert by_name["sleep"]["failed"] == 2 and by_name["sleep"]["disabled"] == 1
    assert by_name["monthly"]["recurring"] == 1 and by_name["monthly"]["scheduled"] == 1
    assert totals["total"] == 9 and totals["failed"] == 3
    html = admin_client.get(overview_url()).content.decode()
    assert (
        '<td class="djj-num djj-count-failed">'
        '<a href="/admin/django_jobs/job/?name=sleep&amp;state=failed">2</a></td>' in html
    )
    assert (
        '<td class="djj-num djj-total-total"><strong><a href="/admin/django_jobs/job/">9</a>'
        in html
    )


def test_counts_come_from_one_aggregate_query() -> None:
    jobs_in_every_state()
    with CaptureQueriesContext(connection) as queries:
        counts_by_name("default")
    # A capped count says the table is small (stats.py), then one GROUP BY counts it.
    assert len(queries) == 2
    assert "LIMIT" in queries[0]["sql"].upper()
    sql = queries[1]["sql"].upper()
    assert "GROUP BY" in sql and "COUNT(" in sql


def test_chart_counts_runs_and_failures_per_interval() -> None:
    now = datetime(2026, 5, 4, 10, 7, tzinfo=UTC)
    job = make_job()
    make_run(job, started_at=datetime(2026, 5, 4, 10, 1, tzinfo=UTC))
    make_run(job, RunOutcome.FAILED, started_at=datetime(2026, 5, 4, 10, 6, tzinfo=UTC))
    make_run(job, RunOutcome.ORPHANED, started_at=datetime(2026, 5, 4, 10, 6, 30, tzinfo=UTC))
    make_run(job, started_at=datetime(2026, 5, 4, 9, 12, tzinfo=UTC))  # 11:12 ago: in the hour
    make_run(job, started_at=datetime(2026, 5, 4, 8, 0, tzinfo=UTC))  # outside the hour
    hour = run_buckets("default", "hour", now)
    assert len(hour) == 12
    assert hour[-1].start == datetime(2026, 5, 4, 10, 5, tzinfo=UTC)
    assert hour[-1].end == datetime(2026, 5, 4, 10, 10, tzinfo=UTC)
    assert (hour[-1].runs, hour[-1].failures) == (2, 2)
    assert (hour[-2].runs, hour[-2].failures) == (1, 0)
    assert sum(b.runs for b in hour) == 4
    day = run_buckets("default", "day", now)
    assert len(day) == 24 and sum(b.runs for b in day) == 5
    assert (day[-1].runs, day[-1].failures) == (3, 2)

    chart = build_chart(hour, "hour")
    assert chart.summary == "4 runs, 2 failed, last hour."
    assert len(chart.bars) == 24
    titles = {bar.title for bar in chart.bars}
    assert "10:05\u201310:10: 2 runs, 2 failed" in titles
    tallest = max(chart.bars, key=lambda bar: bar.height)
    assert tallest.height == chart.plot_bottom - 12  # the peak reaches the top of the plot


def test_nice_ceiling() -> None:
    assert [nice_ceiling(n) for n in [0, 1, 3, 7, 11, 51, 999]] == [1, 1, 5, 10, 20, 100, 1000]


def test_page_draws_the_chart_as_inline_svg(admin_client: Client) -> None:
    make_run(make_job(), RunOutcome.FAILED, started_at=past(minutes=2))
    html = admin_client.get(overview_url()).content.decode()
    assert '<svg class="djj-chart" role="img"' in html
    assert '<rect class="djj-bar-failures"' in html
    assert "1 run, 1 failed, last hour." in html
    html = admin_client.get(overview_url() + "?range=day").content.decode()
    assert "1 run, 1 failed, last day." in html
    assert admin_client.get(overview_url() + "?range=year").status_code == 200  # falls back


def test_live_workers_with_heartbeat_age_and_jobs_in_progress(admin_client: Client) -> None:
    Worker.objects.create(
        worker_id="web-1:100:aaa", hostname="web-1", pid=100, queues=["emails"], concurrency=4
    )
    Worker.objects.create(
        worker_id="web-2:200:bbb",
        hostname="web-2",
        pid=200,
        queues=[],
        concurrency=1,
        last_heartbeat_at=timezone.now() - timedelta(hours=1),
        expires_at=timezone.now() - timedelta(minutes=59),  # its own expiry passed: not listed
    )
    make_job(state=JobState.RUNNING, locked_by="web-1:100:aaa")
    make_job(state=JobState.RUNNING, locked_by="web-1:100:aaa")
    make_job(state=JobState.RUNNING, locked_by="elsewhere")
    response = admin_client.get(overview_url())
    workers = response.context["workers"]
    assert [(w.hostname, w.pid, w.in_progress) for w in workers] == [("web-1", 100, 2)]
    html = response.content.decode()
    assert "web-1:100:aaa" in html and "emails" in html and "web-2" not in html
    assert " s ago" in html


def test_without_workers_it_says_how_to_start_one(admin_client: Client) -> None:
    assert "python manage.py runjobs" in admin_client.get(overview_url()).content.decode()


def test_no_page_reload_live_updates_instead(admin_client: Client) -> None:
    # The old ?refresh=1 reloaded the whole page; live.js now updates its sections.
    for url in (overview_url(), overview_url() + "?refresh=1"):
        html = admin_client.get(url).content.decode()
        assert 'http-equiv="refresh"' not in html
        assert 'class="djj-live-switch"' in html


def test_app_index_and_job_list_link_to_the_overview(admin_client: Client) -> None:
    html = admin_client.get("/admin/django_jobs/").content.decode()
    assert 'href="/admin/django_jobs/job/overview/"' in html
    viewer = client_for(make_user("runs-only", "view_jobrun"))
    assert "/job/overview/" not in viewer.get("/admin/django_jobs/").content.decode()


def test_everything_is_escaped(admin_client: Client) -> None:
    make_job(XSS)
    Worker.objects.create(worker_id=XSS, hostname=XSS, pid=1, queues=[XSS], concurrency=1)
    html = admin_client.get(overview_url()).content.decode()
    assert "<script>alert" not in html
    assert XSS_ESCAPED in html


def test_permissions(client: Client) -> None:
    assert client.get(overview_url()).status_code == 302
    assert client_for(make_user("visitor", is_staff=False)).get(overview_url()).status_code == 302
    assert client_for(make_user("staff")).get(overview_url()).status_code == 403
    assert client_for(make_user("viewer", "view_job")).get(overview_url()).status_code == 200


def test_query_count_is_fixed(admin_client: Client, django_assert_num_queries: object) -> None:
    assert_page_queries(admin_client, overview_url(), OVERVIEW_QUERIES, django_assert_num_queries)
    jobs_in_every_state()
    for i in range(5):
        Worker.objects.create(worker_id=f"w{i}", hostname="h", pid=i + 1, concurrency=1)
        make_job(state=JobState.RUNNING, locked_by=f"w{i}")
        make_run(make_job(f"name-{i}"), RunOutcome.FAILED, started_at=past(minutes=i))
    for query in ["", "?range=day"]:
        assert_page_queries(
            admin_client, overview_url() + query, OVERVIEW_QUERIES, django_assert_num_queries
        )
    viewer = client_for(make_user("viewer", "view_job"))
    assert_page_queries(
        viewer, overview_url(), OVERVIEW_QUERIES + PERMISSION_QUERIES, django_assert_num_queries
    )
