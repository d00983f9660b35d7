"""The read-only admins: run history (JobRun) and workers."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from django_jobs.models import JobRun, JobState, RunOutcome, Worker

from .admin_support import (
    RUN_LIST_QUERIES,
    WORKER_LIST_QUERIES,
    XSS,
    XSS_ESCAPED,
    assert_page_queries,
    client_for,
    make_job,
    make_run,
    make_user,
    run_filter_queries,
)

pytestmark = pytest.mark.django_db

RUNS = "/admin/django_jobs/jobrun/"
WORKERS = "/admin/django_jobs/worker/"


def test_run_list(admin_client: Client) -> None:
    job = make_job()
    failed = make_run(job, RunOutcome.FAILED, error="KeyError: 'x'\nmore lines")
    make_run(None, job_name="gone")  # the job row was deleted; the history stays
    html = admin_client.get(RUNS).content.decode()
    assert f'<a href="/admin/django_jobs/job/{job.pk}/change/">{job.name} #{job.pk}</a>' in html
    assert '<span class="djj-badge djj-failed">failed</span>' in html
    assert "KeyError: &#x27;x&#x27;" in html and "more lines" not in html
    assert "gone" in html
    assert str(failed.pk) in html


def test_run_filters(admin_client: Client) -> None:
    job, other = make_job(), make_job("sleep")
    failed = make_run(job, RunOutcome.FAILED)
    ok = make_run(job)
    make_run(other)

    def listed(query: str) -> set[int]:
        response = admin_client.get(RUNS + query)
        assert response.status_code == 200
        return {run.pk for run in response.context["cl"].result_list}

    assert listed("?outcome=failed") == {failed.pk}
    assert listed(f"?job__id__exact={job.pk}") == {failed.pk, ok.pk}  # the job page's link
    assert listed("?job_name=sleep") == {r.pk for r in JobRun.objects.filter(job=other)}


def test_run_detail_is_read_only(admin_client: Client) -> None:
    run = make_run(make_job(), RunOutcome.FAILED, error=XSS, traceback=XSS)
    url = f"{RUNS}{run.pk}/change/"
    response = admin_client.get(url)
    html = response.content.decode()
    assert response.status_code == 200
    assert 'name="_save"' not in html
    assert "<script>alert" not in html and XSS_ESCAPED in html
    assert admin_client.post(url, {"error": "changed"}).status_code == 403
    assert admin_client.post(f"{RUNS}{run.pk}/delete/", {"post": "yes"}).status_code == 403
    assert admin_client.get(f"{RUNS}add/").status_code == 403
    run.refresh_from_db()
    assert run.error == XSS


def test_runs_need_view_permission(client: Client) -> None:
    assert client.get(RUNS).status_code == 302
    assert client_for(make_user("staff")).get(RUNS).status_code == 403
    assert client_for(make_user("viewer", "view_jobrun")).get(RUNS).status_code == 200


def test_worker_list(admin_client: Client) -> None:
    Worker.objects.create(
        worker_id="web-1:10:abc", hostname="web-1", pid=10, queues=["emails"], concurrency=4
    )
    Worker.objects.create(
        worker_id="web-2:20:def",
        hostname="web-2",
        pid=20,
        concurrency=1,
        last_heartbeat_at=timezone.now() - timedelta(hours=2),
        expires_at=timezone.now() - timedelta(hours=2) + timedelta(seconds=30),  # its own expiry
    )
    make_job(state=JobState.RUNNING, locked_by="web-1:10:abc")
    response = admin_client.get(WORKERS)
    html = response.content.decode()
    by_id = {w.worker_id: w for w in response.context["cl"].result_list}
    assert by_id["web-1:10:abc"].in_progress == 1 and by_id["web-2:20:def"].in_progress == 0
    assert '<span class="djj-badge djj-alive">alive</span>' in html
    assert '<span class="djj-badge djj-stale">stale</span>' in html
    assert "emails" in html and "all" in html  # no queue list means every queue


def test_worker_admin_is_read_only(admin_client: Client) -> None:
    worker = Worker.objects.create(worker_id=XSS, hostname=XSS, pid=1, concurrency=1)
    url = f"{WORKERS}{worker.pk}/change/"
    html = admin_client.get(url).content.decode()
    assert "<script>alert" not in html and XSS_ESCAPED in html
    assert admin_client.post(url, {"hostname": "x"}).status_code == 403
    assert admin_client.post(f"{WORKERS}{worker.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Worker.objects.get().hostname == XSS
    assert "<script>alert" not in admin_client.get(WORKERS).content.decode()


def test_query_counts_are_fixed(admin_client: Client, django_assert_num_queries: object) -> None:
    job = make_job()
    make_run(job)
    Worker.objects.create(worker_id="w1", hostname="h", pid=1, concurrency=1)
    expected = RUN_LIST_QUERIES + run_filter_queries()
    assert_page_queries(admin_client, RUNS, expected, django_assert_num_queries)
    assert_page_queries(admin_client, WORKERS, WORKER_LIST_QUERIES, django_assert_num_queries)
    for i in range(30):
        make_run(make_job(), RunOutcome.FAILED)
        Worker.objects.create(worker_id=f"x{i}", hostname="h", pid=i + 2, concurrency=1)
        make_job(state=JobState.RUNNING, locked_by=f"x{i}")
    for url in [RUNS, RUNS + "?outcome=failed", f"{RUNS}?job__id__exact={job.pk}"]:
        assert_page_queries(admin_client, url, expected, django_assert_num_queries)
    assert_page_queries(admin_client, WORKERS, WORKER_LIST_QUERIES, django_assert_num_queries)
