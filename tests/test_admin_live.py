"""The live views' JSON: the cells of the jobs on the open page, and the overview's sections."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from django_jobs.admin.live import MAX_IDS
from django_jobs.models import Job, JobState

from .admin_support import (
    XSS,
    XSS_ESCAPED,
    changelist_url,
    client_for,
    job_url,
    jobs_in_every_state,
    make_job,
    make_run,
    make_user,
    overview_url,
)

pytestmark = pytest.mark.django_db


def live_url(*jobs: Job | int) -> str:
    ids = ",".join(str(job if isinstance(job, int) else job.pk) for job in jobs)
    return reverse("admin:django_jobs_job_live") + f"?ids={ids}"


def overview_live_url(range_key: str = "hour") -> str:
    return reverse("admin:django_jobs_job_overview_live") + f"?range={range_key}"


def get_json(client: Client, url: str, status: int = 200, **headers: Any) -> dict[str, Any]:
    response = client.get(url, headers=headers)
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "no-cache" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]
    # No tag, quote or ampersand as such anywhere in the answer: they are \u escapes.
    assert not {"<", ">", "&"} & set(response.content.decode()), response.content
    return json.loads(response.content)


def test_rows_of_the_asked_jobs_only(admin_client: Client) -> None:
    jobs = jobs_in_every_state()
    other = make_job("other")
    data = get_json(admin_client, live_url(jobs["running"], jobs["failed"], 999_999))
    by_id = {row["id"]: row for row in data["jobs"]}
    assert set(by_id) == {jobs["running"].pk, jobs["failed"].pk}
    assert other.pk not in by_id
    assert data["gone"] == [999_999]
    running = by_id[jobs["running"].pk]
    assert running["state"] == "running" and running["buttons"] == "running/enabled"
    assert 'class="djj-badge djj-running"' in running["fields"]["state_display"]
    assert '<progress value="42" max="100">' in running["fields"]["state_column"]
    assert "host:1:abc" in running["fields"]["state_column"]
    assert running["fields"]["locked_by"] == "host:1:abc"
    assert running["fields"]["attempts_display"] == "1 of 3"
    failed = by_id[jobs["failed"].pk]
    assert failed["state"] == "failed" and failed["fields"]["failure_count"] == "1"
    assert "<progress" not in failed["fields"]["state_column"]


def test_rows_follow_the_database(admin_client: Client) -> None:
    job = make_job(state=JobState.RUNNING, progress=0.1, locked_by="w:1:a")
    first = get_json(admin_client, live_url(job))["jobs"][0]["fields"]
    assert '<progress value="10"' in first["state_column"]
    Job.objects.filter(pk=job.pk).update(progress=0.75)
    second = get_json(admin_client, live_url(job))["jobs"][0]["fields"]
    assert '<progress value="75"' in second["state_column"]
    Job.objects.filter(pk=job.pk).update(state=JobState.SUCCEEDED, progress=1.0, locked_by=None)
    third = get_json(admin_client, live_url(job))["jobs"][0]
    assert third["state"] == "succeeded" and third["fields"]["locked_by"] == "-"


def test_names_errors_and_progress_messages_are_escaped(admin_client: Client) -> None:
    job = make_job(
        XSS,
        state=JobState.RUNNING,
        locked_by=XSS,
        progress=0.5,
        progress_message=XSS,
        schedule="*/5 * * * *",
        timezone="UTC",
    )
    fields = get_json(admin_client, live_url(job))["jobs"][0]["fields"]
    for name in ("locked_by", "state_column", "progress_detail"):
        assert "<script" not in fields[name], name
    assert XSS_ESCAPED in fields["locked_by"]
    assert XSS_ESCAPED in fields["progress_detail"]


@pytest.mark.parametrize(
    "query",
    [
        "?ids=abc",
        "?ids=1;DROP TABLE x",
        "?ids=-1",
        "?ids=0",
        "?ids=1.5",
        "?ids=99999999999999999999999",
        "?ids=%00",
        "?ids=\u0661",  # an Arabic-Indic digit: str.isdigit() says yes, int() too
        "?ids=" + ",".join(str(i) for i in range(1, MAX_IDS + 2)),
    ],
)
def test_bad_ids_are_a_400_with_a_message(admin_client: Client, query: str) -> None:
    data = get_json(admin_client, reverse("admin:django_jobs_job_live") + query, status=400)
    assert data["error"] == "ids must be up to 200 job ids separated by commas, e.g. ids=12,13."


@pytest.mark.parametrize("query", ["", "?ids=", "?ids=,"])
def test_no_ids_is_an_empty_answer(admin_client: Client, query: str) -> None:
    make_job()
    data = get_json(admin_client, reverse("admin:django_jobs_job_live") + query)
    assert (data["jobs"], data["gone"]) == ([], [])


def test_the_longest_page_fits(admin_client: Client) -> None:
    # "Show all" lists up to list_max_show_all rows; the live updates must take them all.
    from django.contrib import admin

    assert admin.site._registry[Job].list_max_show_all <= MAX_IDS


def test_a_full_page_of_ids_is_answered_in_one_query(
    admin_client: Client, django_assert_num_queries: Any
) -> None:
    jobs = [make_job() for _ in range(MAX_IDS)]
    admin_client.get(live_url(*jobs))
    with django_assert_num_queries(3):  # session, user, the jobs
        data = get_json(admin_client, live_url(*jobs))
    assert len(data["jobs"]) == MAX_IDS


def test_non_staff_and_anonymous_get_403_json(client: Client) -> None:
    job = make_job()
    for url in (live_url(job), overview_live_url()):
        assert get_json(client, url, status=403)["error"].startswith("Log in as a staff user")
        outsider = client_for(make_user(f"outsider{len(url)}", "view_job", is_staff=False))
        assert "error" in get_json(outsider, url, status=403)


def test_staff_without_view_permission_gets_403(client: Client) -> None:
    job = make_job()
    nobody = client_for(make_user("nobody", "view_jobrun"))
    for url in (live_url(job), overview_live_url()):
        assert get_json(nobody, url, status=403)["error"] == "You may not view jobs."
    viewer = client_for(make_user("viewer", "view_job"))
    assert get_json(viewer, live_url(job))["jobs"][0]["id"] == job.pk
    assert "sections" in get_json(viewer, overview_live_url())


def test_forged_requests_are_refused(admin_client: Client) -> None:
    job = make_job()
    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(make_user("poster", is_superuser=True))
    for url in (live_url(job), overview_live_url()):
        # Another site's page making the browser fetch it (the browser says so).
        data = get_json(admin_client, url, status=403, sec_fetch_site="cross-site")
        assert data["error"] == "Live updates are only sent to pages of this site."
        get_json(admin_client, url, status=403, sec_fetch_site="same-site")
        get_json(admin_client, url, sec_fetch_site="same-origin")
        for method in ("post", "put", "delete"):
            response = getattr(csrf_client, method)(url)
            assert response.status_code in (403, 405), (method, response.status_code)
            response = getattr(admin_client, method)(url)
            assert response.status_code == 405 and response["Allow"] == "GET"
    job.refresh_from_db()
    assert job.state == JobState.SCHEDULED


def test_overview_sections(admin_client: Client) -> None:
    jobs = jobs_in_every_state()
    make_job(XSS)
    make_run(jobs["succeeded"])
    data = get_json(admin_client, overview_live_url())
    sections = data["sections"]
    assert set(sections) == {"djj-counts-body", "djj-chart-body", "djj-workers-body"}
    assert XSS_ESCAPED in sections["djj-counts-body"] and XSS not in sections["djj-counts-body"]
    assert "1 run, 0 failed, last hour." in sections["djj-chart-body"]
    assert "No live worker" in sections["djj-workers-body"]
    # The same HTML as the page's own sections.
    page = admin_client.get(overview_url()).content.decode()
    assert sections["djj-counts-body"].strip() in page
    day = get_json(admin_client, overview_live_url("day"))["sections"]
    assert "last day" in day["djj-chart-body"]


@pytest.mark.parametrize("range_key", ["week", "", "%00", "<script>"])
def test_overview_bad_range_is_a_400(admin_client: Client, range_key: str) -> None:
    data = get_json(admin_client, overview_live_url(range_key), status=400)
    assert data["error"].startswith("Unknown range") and "use one of: hour, day." in data["error"]


def test_pages_carry_the_switch_and_the_script(admin_client: Client) -> None:
    jobs = jobs_in_every_state()
    html = admin_client.get(changelist_url()).content.decode()
    assert 'class="djj-live" data-url="/admin/django_jobs/job/live/" data-interval="5"' in html
    ids = ",".join(str(pk) for pk in Job.objects.order_by("-id").values_list("pk", flat=True))
    assert f'data-ids="{ids}"' in html
    assert '<script src="/static/django_jobs/live.js" defer></script>' in html
    page = admin_client.get(job_url(jobs["running"])).content.decode()
    assert f'data-ids="{jobs["running"].pk}" data-state="running/enabled"' in page
    assert 'class="djj-live-switch"' in page
    overview = admin_client.get(overview_url()).content.decode()
    live = 'data-url="/admin/django_jobs/job/overview/live/?range=hour" data-interval="10"'
    assert live in overview
    assert 'http-equiv="refresh"' not in overview
    # An empty list has nothing to update.
    empty = admin_client.get(changelist_url() + "?q=nomatch").content.decode()
    assert 'class="djj-live"' not in empty


def test_the_script_is_served_and_loads_no_other_site() -> None:
    from django.contrib.staticfiles import finders

    path = finders.find("django_jobs/live.js")
    assert path is not None
    text = Path(path).read_text(encoding="utf-8")
    assert "visibilitychange" in text and "localStorage" in text
    assert "http://" not in text and "https://" not in text
