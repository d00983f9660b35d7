"""The job list: columns, badges, filters, sorting, capped count, permissions, queries.

The search box has its own tests: test_admin_search.py.
"""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest
from django.test import Client

from django_jobs.admin.changelist import CappedCountPaginator
from django_jobs.models import Job, JobState

from .admin_support import (
    LIST_QUERIES,
    PERMISSION_QUERIES,
    XSS,
    XSS_ESCAPED,
    assert_page_queries,
    changelist_url,
    client_for,
    future,
    job_filter_queries,
    jobs_in_every_state,
    make_job,
    make_user,
)

pytestmark = pytest.mark.django_db


def listed(client: Client, query: str = "") -> list[int]:
    response = client.get(changelist_url() + query)
    assert response.status_code == 200
    return [job.pk for job in response.context["cl"].result_list]


def test_columns_show_badges_times_schedule_lock_and_progress(admin_client: Client) -> None:
    jobs = jobs_in_every_state()
    html = admin_client.get(changelist_url()).content.decode()
    # Every badge carries its state as text, not colour alone.
    for state in ["scheduled", "due", "running", "succeeded", "failed", "disabled"]:
        assert f'<span class="djj-badge djj-{state}">{state}</span>' in html
    assert re.search(r'<time datetime="[^"]+" title="[^"]+ UTC">in 4\xa0minutes</time>', html) or (
        re.search(r'<time datetime="[^"]+" title="[^"]+ UTC">in 5\xa0minutes</time>', html)
    )
    assert "2.00 s" in html  # the succeeded job's last duration
    assert '<span title="0 3 1 * *">monthly on day 1 at 03:00 (Europe/Paris)</span>' in html
    assert "host:1:abc" in html  # lock owner of the running job
    assert '<progress value="42" max="100">42%</progress>' in html
    assert str(jobs["failed"].pk) in html


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("scheduled", ["scheduled", "disabled", "recurring"]),
        ("due", ["due"]),
        ("running", ["running"]),
        ("succeeded", ["succeeded"]),
        ("failed", ["failed"]),
        ("recurring", ["recurring"]),
        ("disabled", ["disabled"]),
    ],
)
def test_state_filter(admin_client: Client, state: str, expected: list[str]) -> None:
    jobs = jobs_in_every_state()
    assert sorted(listed(admin_client, f"?state={state}")) == sorted(jobs[k].pk for k in expected)


def test_scheduled_and_due_split_the_waiting_jobs(admin_client: Client) -> None:
    jobs_in_every_state()
    make_job(next_run_at=None)  # waiting without a time: scheduled, never due
    scheduled = set(listed(admin_client, "?state=scheduled"))
    due = set(listed(admin_client, "?state=due"))
    assert not scheduled & due
    assert scheduled | due == set(Job.objects.scheduled().values_list("pk", flat=True))


def test_name_and_queue_filters_list_registered_values_and_those_of_rows(
    admin_client: Client, django_assert_num_queries: object
) -> None:
    record = make_job("record", queue="default")
    emails = make_job("sleep", queue="emails")
    response = admin_client.get(changelist_url())
    html = response.content.decode()
    assert "?name=fail-twice" in html  # a registered job with no rows still shows
    assert listed(admin_client, "?name=sleep") == [emails.pk]
    assert listed(admin_client, "?queue=emails") == [emails.pk]
    assert listed(admin_client, "?queue=default") == [record.pk]
    assert listed(admin_client, "?name=record&queue=emails") == []


def test_sorting_is_offered_only_on_indexed_columns(admin_client: Client) -> None:
    late = make_job("record", next_run_at=future(hours=2), priority=1)
    early = make_job("sleep", next_run_at=future(hours=1), priority=9)
    response = admin_client.get(changelist_url())
    sortable = {str(h["text"]).lower() for h in _headers(response) if h["sortable"]}
    assert sortable == {"id", "name", "next run"}
    next_run_column = response.context["cl"].list_display.index("next_run")
    assert listed(admin_client, f"?o={next_run_column}") == [early.pk, late.pk]
    assert listed(admin_client, f"?o=-{next_run_column}") == [late.pk, early.pk]
    # A forged sort on a column without an index is ignored: the default order (-id) stays.
    failures_column = response.context["cl"].list_display.index("failure_count")
    assert listed(admin_client, f"?o=-{failures_column}") == [early.pk, late.pk]
    assert listed(admin_client, f"?o={failures_column}") == [early.pk, late.pk]


def _headers(response: object) -> list[dict[str, object]]:
    from django.contrib.admin.templatetags.admin_list import result_headers

    return list(result_headers(response.context["cl"]))  # type: ignore[attr-defined]


def test_count_stops_at_the_limit(admin_client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(CappedCountPaginator, "count_limit", 3)
    for _ in range(5):
        make_job()
    response = admin_client.get(changelist_url() + "?all=")
    html = response.content.decode()
    assert "3+ jobs" in html
    assert response.context["cl"].full_result_count is None  # no second, unfiltered count
    for _ in range(3):
        Job.objects.all().order_by("pk").first().delete()  # type: ignore[union-attr]
    assert "2 jobs" in admin_client.get(changelist_url()).content.decode()


def test_capped_count_reads_well_in_every_number_format(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch, settings: object
) -> None:
    monkeypatch.setattr(CappedCountPaginator, "count_limit", 1000)
    Job.objects.bulk_create(Job(name="record") for _ in range(1001))
    assert "1,000+ jobs" in admin_client.get(changelist_url()).content.decode()
    settings.USE_THOUSAND_SEPARATOR = True  # type: ignore[attr-defined]
    html = admin_client.get(changelist_url()).content.decode()
    assert "1,000 jobs" in html and "1,0,0" not in html


def test_names_data_and_errors_are_escaped(admin_client: Client) -> None:
    make_job(
        XSS,
        data={"x": XSS},
        queue=XSS,
        state=JobState.RUNNING,
        locked_by=XSS,
        progress=0.5,
        progress_message=XSS,
    )
    html = admin_client.get(changelist_url() + "?q=" + quote(XSS)).content.decode()
    assert "<script>alert" not in html
    assert XSS_ESCAPED in html


def test_anonymous_and_non_staff_users_are_sent_to_the_login_page(
    client: Client, django_user_model: object
) -> None:
    response = client.get(changelist_url())
    assert response.status_code == 302 and "/login/" in response["Location"]
    user = make_user("visitor", is_staff=False)
    response = client_for(user).get(changelist_url())
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_staff_without_view_permission_gets_403() -> None:
    response = client_for(make_user("staff")).get(changelist_url())
    assert response.status_code == 403


def test_actions_offered_follow_the_permissions() -> None:
    make_job()

    def offered(*codenames: str) -> set[str]:
        user = make_user("u-" + "-".join(codenames), "view_job", *codenames)
        response = client_for(user).get(changelist_url())
        assert response.status_code == 200
        form = response.context["action_form"]
        return {name for name, _label in form.fields["action"].choices if name} if form else set()

    assert offered() == set()
    assert offered("run_job") == {"run_now", "retry"}
    assert offered("reschedule_job") == {"reschedule"}
    assert offered("change_job") == {"disable", "enable"}
    assert offered("delete_job") == {"cancel", "delete_finished"}  # never delete_selected
    assert offered("add_job", "run_job", "reschedule_job", "change_job", "delete_job") == {
        "run_now",
        "retry",
        "reschedule",
        "disable",
        "enable",
        "cancel",
        "delete_finished",
    }


def test_add_button_only_with_add_permission() -> None:
    viewer = client_for(make_user("viewer", "view_job"))
    adder = client_for(make_user("adder", "view_job", "add_job"))
    assert "/add/" not in viewer.get(changelist_url()).content.decode()
    assert "/admin/django_jobs/job/add/" in adder.get(changelist_url()).content.decode()


def test_list_links_to_the_overview(admin_client: Client) -> None:
    html = admin_client.get(changelist_url()).content.decode()
    assert 'href="/admin/django_jobs/job/overview/"' in html


def test_query_count_is_fixed(admin_client: Client, django_assert_num_queries: object) -> None:
    jobs_in_every_state()
    expected = LIST_QUERIES + job_filter_queries()
    assert_page_queries(admin_client, changelist_url(), expected, django_assert_num_queries)
    for _ in range(3):
        jobs_in_every_state_extra()
    for query in ["", "?state=failed&q=record", "?o=-4&name=record", "?p=2"]:
        assert_page_queries(
            admin_client, changelist_url() + query, expected, django_assert_num_queries
        )
    viewer = client_for(make_user("viewer", "view_job", "run_job"))
    assert_page_queries(
        viewer, changelist_url(), expected + PERMISSION_QUERIES, django_assert_num_queries
    )


def jobs_in_every_state_extra() -> None:
    for state in [JobState.SCHEDULED, JobState.FAILED, JobState.SUCCEEDED]:
        make_job(state=state, data={"n": 1})
