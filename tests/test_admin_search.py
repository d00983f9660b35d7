"""The search box of the job and run lists (key:value, id, unique key, name), and deep pages."""

from __future__ import annotations

import pytest
from django.test import Client

from django_jobs.admin.changelist import CappedCountPaginator
from django_jobs.admin.search import json_values, terms
from django_jobs.models import Job, JobState

from .admin_support import changelist_url, make_job, make_run

pytestmark = pytest.mark.django_db

RUNS = "/admin/django_jobs/jobrun/"


def listed(client: Client, query: str, url: str = "") -> list[int]:
    response = client.get((url or changelist_url()) + query)
    assert response.status_code == 200, query
    return sorted(row.pk for row in response.context["cl"].result_list)


@pytest.fixture
def jobs() -> dict[str, Job]:
    return {
        "alice": make_job(
            "record",
            data={"email": "alice@example.com", "order_id": 1234, "plan": "gold"},
            unique_key="report:3",
        ),
        "bob": make_job(
            "sleep",
            data={"email": "bob@example.com", "order_id": "1234", "customer": {"id": 7}},
            state=JobState.FAILED,
        ),
        "carol": make_job("record", data={"email": "carol x@example.com", "vip": True}),
    }


def test_key_value_matches_a_value_in_the_data(admin_client: Client, jobs: dict[str, Job]) -> None:
    alice, bob = jobs["alice"].pk, jobs["bob"].pk
    assert listed(admin_client, "?q=email:alice@example.com") == [alice]
    assert listed(admin_client, "?q=email=bob@example.com") == [bob]
    # A number matches the number and the same text stored as a string.
    assert listed(admin_client, "?q=order_id:1234") == sorted([alice, bob])
    assert listed(admin_client, '?q=order_id:"1234"') == [bob]  # quoted: the string only
    assert listed(admin_client, "?q=vip:true") == [jobs["carol"].pk]
    assert listed(admin_client, "?q=customer.id:7") == [bob]  # a nested key
    assert listed(admin_client, '?q=email:"carol x@example.com"') == [jobs["carol"].pk]


def test_every_term_must_match_and_filters_combine(
    admin_client: Client, jobs: dict[str, Job]
) -> None:
    alice, bob = jobs["alice"].pk, jobs["bob"].pk
    assert listed(admin_client, "?q=order_id:1234+plan:gold") == [alice]
    assert listed(admin_client, "?q=order_id:1234&state=failed") == [bob]
    assert listed(admin_client, "?q=email:alice@example.com&state=failed") == []


def test_no_substring_matches(admin_client: Client, jobs: dict[str, Job]) -> None:
    # Substrings would read every row: only whole values match.
    for query in [
        "alice",
        "email:alice",
        "gold",
        "example.com",
        "recor",
        "email:ALICE@example.com",
    ]:
        assert listed(admin_client, f"?q={query}") == [], query


def test_id_unique_key_and_name(admin_client: Client, jobs: dict[str, Job]) -> None:
    alice = jobs["alice"].pk
    assert listed(admin_client, f"?q={alice}") == [alice]
    assert listed(admin_client, f"?q=%23{alice}") == [alice]  # #1234
    assert listed(admin_client, "?q=report:3") == [alice]  # the unique key, though it has ":"
    assert listed(admin_client, "?q=record") == sorted([alice, jobs["carol"].pk])
    assert listed(admin_client, "?q=99999999999999999999") == []  # past any id: no error


def test_odd_terms_give_a_page(admin_client: Client, jobs: dict[str, Job]) -> None:
    for query in [":", "=", "a:", ":b", "a.:b", "email:NaN", "x:Infinity", "x:null", "'", "%25"]:
        assert admin_client.get(changelist_url() + f"?q={query}").status_code == 200, query


def test_the_page_states_the_syntax(admin_client: Client) -> None:
    html = admin_client.get(changelist_url()).content.decode()
    assert "key:value" in html and "email:ada@example.com" in html
    assert "exact worker id" in admin_client.get(RUNS).content.decode()


def test_run_list_search_is_by_worker_name_or_id(admin_client: Client) -> None:
    job = make_job("record")
    first = make_run(job, worker_id="web-1:10:abc")
    second = make_run(job, worker_id="web-2:11:def")
    assert listed(admin_client, "?q=web-1:10:abc", RUNS) == [first.pk]
    assert listed(admin_client, "?q=record", RUNS) == sorted([first.pk, second.pk])
    assert listed(admin_client, f"?q=%23{second.pk}", RUNS) == [second.pk]
    assert listed(admin_client, "?q=web-1", RUNS) == []  # whole values only


def test_terms_and_values() -> None:
    assert terms("a:1  \"b c\"  d='e f'") == ["a:1", "b c", "d='e f'"]
    assert json_values("12") == ["12", 12]
    assert json_values("false") == ["false", False]
    assert json_values('"12"') == ["12"]
    assert json_values("NaN") == ["NaN"]
    assert json_values("abc") == ["abc"]


def test_a_deep_page_is_served_not_sent_back_to_page_one(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(CappedCountPaginator, "count_limit", 10)
    Job.objects.bulk_create(Job(name="record") for _ in range(30))
    ids = sorted(Job.objects.values_list("pk", flat=True), reverse=True)
    monkeypatch.setattr("django_jobs.admin.jobs.JobAdmin.list_per_page", 5)
    response = admin_client.get(changelist_url() + "?p=4")  # rows 16-20, past the 10 counted
    assert response.status_code == 200
    assert [job.pk for job in response.context["cl"].result_list] == ids[15:20]
    assert "25+ jobs" in response.content.decode()  # counted to one page past this one
    response = admin_client.get(changelist_url() + "?p=7")  # past the last row
    assert response.status_code == 302 and "e=1" in response["Location"]


def test_sorted_by_name_breaks_ties_by_id_the_same_way(admin_client: Client) -> None:
    a1, b1, a2, b2 = (make_job(name) for name in ["record", "sleep", "record", "sleep"])
    response = admin_client.get(changelist_url())
    name_column = response.context["cl"].list_display.index("name")
    ordered = [
        j.pk
        for j in admin_client.get(changelist_url() + f"?o={name_column}").context["cl"].result_list
    ]
    assert ordered == [a1.pk, a2.pk, b1.pk, b2.pk]
    ordered = [
        j.pk
        for j in admin_client.get(changelist_url() + f"?o=-{name_column}").context["cl"].result_list
    ]
    assert ordered == [b2.pk, b1.pk, a2.pk, a1.pk]
